"""Agents, their conversations, and the turns that run them.

Every row carries its tenant, and every query the API makes filters on it. Messages are ordered by
(seq, index): `seq` is the conversation's turn (or import) number and `index` the position inside
it, so a reply always sorts right after the input of its own turn, even if a later request stored
its message while this turn was still running.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.postgres.indexes import BrinIndex
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from agents.turns import AgentState
from budgets.models import Tenant
from sentinel_site import egress


class MultitaskStrategy(models.TextChoices):
    """What a new message does when its conversation still has a turn running (double-texting)."""

    ENQUEUE = "enqueue"  # it waits for the running turn
    REJECT = "reject"  # 409 with the running turn's id
    INTERRUPT = "interrupt"  # the running turn is interrupted (partial kept); the new one runs next
    ROLLBACK = "rollback"  # the running turn is cancelled and its messages removed


class AgentQuerySet(models.QuerySet):
    def live(self) -> AgentQuerySet:
        """Agents not deleted: the only ones the API shows, runs or lets a name be taken by."""
        return self.filter(deleted_at__isnull=True)


class Agent(models.Model):
    """A configured assistant: a system prompt, a model and where to reach it.

    Deleting an agent through the API only marks it deleted: its turns, their immutable events and
    the spend ledger stay (nothing cascades away), and its name is free for a new agent.
    The provider rules live here, so the API, the admin and every later writer obey them: a base
    URL must pass the egress policy (`clean`), and changing the base URL drops the stored key
    unless a new one is set in the same save (a key goes only where its owner sent it).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="agents")
    name = models.SlugField(max_length=64, help_text="Clients select the agent by sending this as `model`.")
    system_prompt = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="Provider model; blank uses the deployment default.")
    provider_base_url = models.URLField(
        blank=True, help_text="OpenAI-compatible base URL, checked against SENTINEL_PROVIDER_ALLOWED_HOSTS; blank: the deployment's."
    )
    provider_api_key = models.CharField(
        max_length=500,
        blank=True,
        help_text="Write-only. With a base URL of its own, the only key sent there (blank: none); else blank uses the deployment's.",
    )
    specialization = models.CharField(max_length=200, blank=True)
    default_params = models.JSONField(default=dict, blank=True, help_text="Defaults for temperature, max_tokens, ...")
    # Memory: what one turn may send, and when the Dreamer consolidates (see memory/context.py).
    context_budget = models.PositiveIntegerField(default=2048, help_text="Tokens of context sent to the model per turn.")
    short_term_messages = models.PositiveIntegerField(default=12, help_text="Most recent messages kept verbatim.")
    short_term_tokens = models.PositiveIntegerField(default=1024, help_text="Token cap of the verbatim recent window.")
    recall_limit = models.PositiveIntegerField(default=8, help_text="Long-term memories recalled per turn.")
    consolidation_threshold = models.PositiveIntegerField(default=10000, help_text="Unconsolidated tokens that trigger the Dreamer.")
    # Set by the indexer when long-term memory first holds something of the agent, cleared when its
    # last memory is forgotten (memory/indexing.py): while false, a turn skips recall, query embedding
    # and all, at the cost of no query (the claim reads the agent row anyway).
    has_memories = models.BooleanField(default=False, editable=False, help_text="Long-term memory may hold something of it.")
    multitask_strategy = models.CharField(
        max_length=16,
        choices=MultitaskStrategy.choices,
        default=MultitaskStrategy.ENQUEUE,
        help_text="What a message does while the conversation's turn still runs (a request may override it).",
    )
    requires_approval = models.JSONField(
        default=list, blank=True, help_text="Tool names whose calls wait for a person's approval before they are returned."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AgentQuerySet.as_manager()
    # Writers set this when a request carried a provider key, so a key re-sent with a new URL stays.
    provider_api_key_given = False

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], condition=models.Q(deleted_at__isnull=True), name="agent_name_unique_per_tenant"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        loaded_url, loaded_key = getattr(self, "_loaded_provider", (None, None))
        moved = loaded_url is not None and self.provider_base_url != loaded_url
        if moved and self.provider_api_key == loaded_key and not self.provider_api_key_given:
            self.provider_api_key = ""  # the URL moved and no new key came with it
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "provider_api_key"}
        if not self._state.adding and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            # has_memories belongs to the indexer: saving a loaded agent never writes back the flag
            # as it was read, stale if memories came meanwhile (its turns would stop recalling).
            kwargs["update_fields"] = [f.name for f in self._meta.concrete_fields if not f.primary_key and f.name != "has_memories"]
        super().save(*args, **kwargs)
        self._loaded_provider = (self.provider_base_url, self.provider_api_key)
        self.provider_api_key_given = False

    @classmethod
    def from_db(cls, db, field_names, values):
        agent = super().from_db(db, field_names, values)
        loaded = dict(zip(field_names, values, strict=True))
        agent._loaded_provider = (loaded.get("provider_base_url"), loaded.get("provider_api_key"))
        return agent

    def clean(self) -> None:
        super().clean()
        if self.provider_base_url:
            try:
                egress.check_url(self.provider_base_url)
            except egress.EgressDenied as denied:
                raise ValidationError({"provider_base_url": f"This URL is not allowed: {denied}."}) from None


class Conversation(models.Model):
    """A thread of messages with one agent. `last_seq` numbers its turns and imports."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="conversations")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    last_seq = models.PositiveIntegerField(default=0, editable=False)
    # The Dreamer's claim: while this lies in the future, one Dreamer owns the conversation.
    consolidation_lease = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="conversation_tenant_recent")]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Role(models.TextChoices):
    SYSTEM = "system"
    DEVELOPER = "developer"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class Message(models.Model):
    """One message of a conversation, in OpenAI's chat shape."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    turn = models.ForeignKey("Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages")
    seq = models.PositiveIntegerField()
    index = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    name = models.CharField(max_length=64, blank=True)
    tool_calls = models.JSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=100, blank=True)
    client_id = models.CharField(max_length=200, blank=True, help_text="The importer's own id for this message.")
    occurred_at = models.DateTimeField(default=timezone.now, help_text="When it was said (imports may give it).")
    token_count = models.PositiveIntegerField(null=True, blank=True, help_text="Filled by the memory task.")
    embedded = models.BooleanField(default=False, help_text="Its long-term memory exists.")
    summary = models.ForeignKey(
        "memory.Summary",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        help_text="Set when the Dreamer consolidated it; the message itself is never deleted.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["seq", "index"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq", "index"], name="message_position_unique"),
            models.UniqueConstraint(
                fields=["conversation", "client_id"], condition=~models.Q(client_id=""), name="message_client_id_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["created_at"], condition=models.Q(embedded=False), name="message_not_embedded"),
            models.Index(fields=["conversation", "seq", "index"], condition=models.Q(summary__isnull=True), name="message_unconsolidated"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"

    @classmethod
    def delete_locked(cls, messages: models.QuerySet[Message]) -> None:
        """Delete messages (and what memory keeps of them) once their rows are locked: the indexer
        embeds a message under that lock, so a memory it writes meanwhile is deleted with them
        rather than left pointing at a message gone (a foreign key violation at commit)."""
        ids = list(messages.select_for_update().values_list("id", flat=True))
        if ids:
            cls.objects.filter(id__in=ids).delete()

    @classmethod
    def from_openai(cls, message: dict, **fields: Any) -> Message:
        """An unsaved row for one validated message in OpenAI's chat shape; `fields` place it."""
        return cls(
            role=message["role"],
            content=message.get("content") or "",
            name=message.get("name", ""),
            tool_calls=message.get("tool_calls") or None,
            tool_call_id=message.get("tool_call_id", ""),
            **fields,
        )

    def as_openai(self) -> dict:
        """The message as the chat completions API expects it."""
        message: dict = {"role": self.role, "content": self.content}
        if self.name:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
            if not self.content:
                message["content"] = None
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


class TurnStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"  # a tool call waits for a person (agents/approvals.py)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # stopped with its state kept; resumable (agents/control.py)


# A turn not yet over: later turns of its conversation wait for it. (An interrupted turn is over
# until someone resumes it: the conversation goes on without it.)
UNFINISHED = (TurnStatus.QUEUED, TurnStatus.RUNNING, TurnStatus.AWAITING_APPROVAL)


class Stop(models.TextChoices):
    """What a client (or a shutdown) asked of a turn while it runs: its worker stops at the next token."""

    CANCEL = "cancel"  # end it; what was streamed stays as a partial answer
    INTERRUPT = "interrupt"  # end it for now, its state kept for a resume
    ROLLBACK = "rollback"  # end it and remove its messages from the history
    SHUTDOWN = "shutdown"  # an interrupt by a worker going down: resumed when a worker comes back


class Turn(models.Model):
    """One request to an agent and everything that happened running it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="turns")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="turns")
    api_key = models.ForeignKey("budgets.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="turns")
    seq = models.PositiveIntegerField()
    status = models.CharField(max_length=24, choices=TurnStatus.choices, default=TurnStatus.QUEUED)
    agent_state = models.CharField(max_length=16, choices=[(s.value, s.name.title()) for s in AgentState], default=AgentState.IDLE)
    # Incremented by every claim; a worker's writes are fenced on the attempt it claimed.
    attempt = models.PositiveIntegerField(default=0)
    stream = models.BooleanField(default=False)
    params = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL keeps the unique constraint partial
    request_hash = models.CharField(max_length=64, blank=True)
    trace_id = models.CharField(max_length=64, blank=True, help_text="Ties the worker's logs to the request's.")
    traceparent = models.CharField(
        max_length=55, blank=True, default="", help_text="The request span's W3C traceparent: each attempt's span is its child."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    provider_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error = models.JSONField(null=True, blank=True)
    # Set by a cancel or interrupt of a running turn; its worker sees it within a second (heartbeat.py).
    stop_requested = models.CharField(max_length=16, choices=Stop.choices, blank=True, default="")
    output = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="turn_seq_unique_per_conversation"),
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="turn_idempotency_key_unique_per_tenant",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="turn_status_heartbeat"),
            models.Index(fields=["tenant", "-created_at"], name="turn_tenant_recent"),
            # The admin overview reads every tenant's last hour; turns are written in time order, so a
            # block-range index answers it for a few pages of index instead of a btree entry per turn.
            BrinIndex(fields=["created_at"], name="turn_created_brin"),
        ]

    def __str__(self) -> str:
        return f"turn {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in UNFINISHED

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ImmutableError(Exception):
    """Turn events are an append-only log."""


class EventKind(models.TextChoices):
    """What one entry of a turn's log records (TurnEventRecord.kind)."""

    QUEUED = "queued"  # admitted (lane 0, with the request's own payload)
    CLAIMED = "claimed"  # a worker took the turn for an attempt
    STATE = "state"  # a state machine transition (from_state, to_state)
    PROVIDER_REQUEST = "provider_request"  # the body sent to the model and the context behind it
    PROVIDER_RESPONSE = "provider_response"  # what the model answered
    PROVIDER_RETRY = "provider_retry"  # a retryable provider error, and the delay before the next try
    PROVIDER_ERROR = "provider_error"  # the error that ended the attempt (also a refusal: budget, price, context)
    FAILED = "failed"  # the turn failed for good
    COMPLETED = "completed"  # the turn succeeded: its reply message and cost
    ZOMBIE_REQUEUED = "zombie_requeued"  # the Supervisor requeued a turn whose worker went silent (lane 0)
    DEAD_LETTERED = "dead_lettered"  # the Supervisor gave up on the turn (lane 0)
    STOP_REQUESTED = "stop_requested"  # a cancel or interrupt was asked for (lane 0: who, which)
    CANCELLED = "cancelled"  # the turn ended cancelled: what was streamed, what it cost
    INTERRUPTED = "interrupted"  # the turn stopped with its state kept: the partial answer, where the reply goes
    RESUMED = "resumed"  # an interrupted turn was queued again (lane 0), with any input added or edited
    APPROVAL_REQUESTED = "approval_requested"  # tool calls held for a person (the approval's id)
    APPROVAL_DECIDED = "approval_decided"  # approved, denied or expired (lane 0: by whom, why)
    ROUTE = "route"  # a model group attempt: the deployment chosen and why, or one skipped (routing/route.py)


class TurnEventRecord(models.Model):
    """An immutable entry in a turn's log: a state transition, a provider exchange, an error.

    Together they are the replay log: what was sent to the provider and what came back.
    """

    id = models.BigAutoField(primary_key=True)
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        # Numbered within an attempt: a worker that lost its claim can only ever append to its
        # own (old) attempt, never collide with the attempt that replaced it.
        ordering = ["turn", "attempt", "seq"]
        db_table = "agents_turnevent"
        verbose_name = "turn event"
        constraints = [models.UniqueConstraint(fields=["turn", "attempt", "seq"], name="turn_event_seq_unique")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.seq}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ImmutableError("turn events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableError("turn events cannot be deleted")


class DeadLetter(models.Model):
    """A turn given up on after its attempts: why, how often, and the last error; re-drivable."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    turn = models.OneToOneField(Turn, on_delete=models.CASCADE, related_name="dead_letter")
    reason = models.CharField(max_length=64)
    attempts = models.PositiveIntegerField()
    last_error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    redriven_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="deadletter_tenant_recent")]

    def __str__(self) -> str:
        return f"dead letter {self.turn_id} ({self.reason})"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"  # denied automatically when its TTL passed


class Approval(models.Model):
    """Tool calls of a turn held for a person's decision (the agent's `requires_approval`).

    Approved, the calls (with any edited arguments) are the turn's answer, as if the model had just
    returned them; denied or expired, the model is told and answers again. Pending past `expires_at`
    it is denied by the Supervisor's sweep, so a crash never leaves a conversation waiting for good.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="approvals")
    tool_calls = models.JSONField(help_text="The calls as the model returned them.")
    status = models.CharField(max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    reason = models.TextField(blank=True)
    edited_tool_calls = models.JSONField(null=True, blank=True, help_text="The calls as approved, when arguments were edited.")
    decided_by = models.CharField(max_length=200, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="approval_tenant_recent"),
            models.Index(fields=["expires_at"], condition=models.Q(status="pending"), name="approval_pending_expiry"),
        ]

    def __str__(self) -> str:
        return f"approval {self.id} ({self.status})"
