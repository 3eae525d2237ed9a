"""Medium- and long-term memory: summaries the Dreamer writes, and embeddings in pgvector.

Messages themselves live in agents.Message (the medium-term record, never deleted by
consolidation). A Memory is one embedded text: a message or a summary, with its metadata, searchable
by cosine distance (exactly, or through an HNSW index for a large tenant). Every row belongs to a tenant; every query filters on it.
"""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

from budgets.models import Tenant

EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2 and the static model distilled from it; OpenAI's text-embedding-3-small is asked for 384 too


class Summary(models.Model):
    """A consolidated span of a conversation, linked to the messages it replaces in context."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey("agents.Conversation", on_delete=models.CASCADE, related_name="summaries")
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    source_message_ids = ArrayField(models.UUIDField(), default=list)
    first_seq = models.PositiveIntegerField()
    last_seq = models.PositiveIntegerField()
    source_tokens = models.PositiveIntegerField(default=0, help_text="Tokens of the messages it summarises.")
    # When the span was said (its first and last message): a summary is remembered by the dates of
    # what it covers, not by when the Dreamer wrote it, so "when did ..." can be answered from it.
    first_at = models.DateTimeField(null=True, blank=True)
    last_at = models.DateTimeField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["conversation", "first_seq"]
        verbose_name_plural = "summaries"

    def __str__(self) -> str:
        return f"summary of {len(self.source_message_ids)} messages"


class MemoryKind(models.TextChoices):
    MESSAGE = "message"
    SUMMARY = "summary"
    FACT = "fact"  # a short dated statement the Dreamer extracted (memory/facts.py)


class Memory(models.Model):
    """One embedded text in long-term memory."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey("agents.Conversation", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=MemoryKind.choices)
    message = models.OneToOneField("agents.Message", null=True, blank=True, on_delete=models.CASCADE, related_name="memory")
    summary = models.OneToOneField(Summary, null=True, blank=True, on_delete=models.CASCADE, related_name="memory")
    role = models.CharField(max_length=16, blank=True)
    text = models.TextField()
    source_message_ids = ArrayField(models.UUIDField(), default=list)
    occurred_at = models.DateTimeField(default=timezone.now)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    # The model that computed `embedding`: only vectors of one model are comparable (memory/embeddings.py).
    embedding_model = models.CharField(max_length=100)
    # A shared memory this text also belongs to (memory/shared.py): every conversation of the scope
    # recalls it, whichever agent it belongs to. Blank: only its own agent's.
    scope = models.CharField(max_length=100, blank=True, default="")
    # Full-text side of hybrid search (memory/search.py): kept by PostgreSQL itself, so no writer
    # can forget it and no turn pays for it.
    search_vector = models.GeneratedField(
        expression=SearchVector("text", config="english"), output_field=SearchVectorField(), db_persist=True
    )
    # Facts: what the fact is about ("alice|job"), and the earlier fact it contradicts. Both stay;
    # search ranks the newer first (nothing is lost to a destructive merge).
    fact_key = models.CharField(max_length=200, blank=True, default="")
    supersedes = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="superseded_by")
    # Whether the HNSW index holds this memory (memory/hnsw.py): only a tenant one of whose scopes
    # outgrew the exact scan needs it, and entering it is most of PostgreSQL's cost of writing a row.
    in_hnsw = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-occurred_at"]
        verbose_name_plural = "memories"
        indexes = [
            HnswIndex(
                name="memory_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
                condition=models.Q(in_hnsw=True),
            ),
            # A search past the exact bound scans what the HNSW index does not hold yet by this one.
            models.Index(fields=["tenant", "in_hnsw"], name="memory_tenant_in_hnsw"),
            GinIndex(name="memory_search_vector_gin", fields=["search_vector"]),
            models.Index(fields=["conversation", "fact_key"], condition=models.Q(kind="fact"), name="memory_fact_key"),
            models.Index(fields=["tenant", "agent"], name="memory_tenant_agent"),
            models.Index(fields=["tenant", "conversation"], name="memory_tenant_conversation"),
            models.Index(fields=["tenant", "scope"], condition=~models.Q(scope=""), name="memory_tenant_scope"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(kind="message", message__isnull=False, summary__isnull=True)
                    | models.Q(kind="summary", summary__isnull=False, message__isnull=True)
                    | models.Q(kind="fact", summary__isnull=True, message__isnull=True)
                ),
                name="memory_has_exactly_its_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.text[:60]}"


class EmbeddingCache(models.Model):
    """Embeddings by (model, hash of the tenant and the text): a tenant's identical texts are embedded
    once. Never shared across tenants: a hit answers sooner, and would tell a tenant what another had
    said (memory/embeddings.content_hash)."""

    model = models.CharField(max_length=100)
    content_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["model", "content_hash"], name="embedding_cache_unique")]

    def __str__(self) -> str:
        return f"{self.model}:{self.content_hash[:12]}"


class HnswTenant(models.Model):
    """A tenant whose memories the HNSW index holds (memory/hnsw.py): a search of one of its scopes
    found more memories than it scans exactly. Once a tenant, always: a scope that shrinks is
    scanned exactly again, and the index entries it has cost nothing more."""

    tenant = models.OneToOneField(Tenant, primary_key=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "HNSW tenant"

    def __str__(self) -> str:
        return f"HNSW index for {self.tenant_id}"


class ConsolidationRun(models.Model):
    """One Dreamer pass over one conversation: what it took, what it wrote, or why it failed."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        DRY_RUN = "dry_run"
        SKIPPED = "skipped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey("agents.Conversation", on_delete=models.CASCADE, related_name="consolidation_runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, default="schedule")
    summary = models.ForeignKey(Summary, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message_count = models.PositiveIntegerField(default=0)
    # Progress, written as the run moves on: where it is, and the conversation's messages
    # consolidated of all it has (read by the API and the admin while it runs).
    stage = models.CharField(max_length=16, default="planned", help_text="planned, prompting, writing, done.")
    consolidated_messages = models.PositiveIntegerField(default=0)
    total_messages = models.PositiveIntegerField(default=0)
    facts = models.PositiveIntegerField(default=0, help_text="Facts extracted from the span.")
    prompt_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time waiting for the model.")
    source_tokens = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"consolidation {self.status}"
