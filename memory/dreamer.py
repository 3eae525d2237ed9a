"""The Dreamer: consolidates long conversations into summaries, oldest span first.

A conversation is consolidated by one Dreamer at a time: it is claimed with a conditional update
of its lease (the same shape as a turn claim), and the span is marked consolidated only if none of
its messages was marked meanwhile. The summary is written and the span marked in one transaction,
after the model answered: a failure anywhere leaves the span unconsolidated for the next run.
Messages are never deleted, and only messages already in long-term memory (embedded) are
consolidated, so every consolidated fact stays recallable.

Consolidation spends like a turn: each model call reserves its worst case on the tenant's budgets
first (refused: the span waits), settles what it cost on the spend ledger, and one tenant's
consolidations may spend at most DREAMER_MAX_TOKENS_PER_TENANT tokens per Dreamer run (or per
consolidation asked for through the API), so no tenant's backlog uses up a run for all.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django import db
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from agents import outcomes, providers
from agents.models import Conversation, Message
from budgets import spend
from memory import embeddings, facts, indexing, tokens
from memory.models import ConsolidationRun, Memory, MemoryKind, Summary
from sentinel_site import metrics

log = logging.getLogger(__name__)

# Short (74 tokens with facts.PROMPT, from 158): the first consolidation through a server pays for
# every token of it; later ones reuse it as the cached prefix.
PROMPT = (
    "Summarise the conversation below for a later reader in short third-person bullet points, keeping names, "
    "numbers, dates, places, preferences, decisions and plans; add nothing.\n" + facts.PROMPT
)


@dataclass
class Plan:
    """What one consolidation step would take."""

    conversation_id: uuid.UUID
    message_ids: list = field(default_factory=list)
    tokens: int = 0
    first_seq: int = 0
    last_seq: int = 0

    def as_dict(self) -> dict:
        return {
            "conversation": str(self.conversation_id),
            "message_count": len(self.message_ids),
            "source_tokens": self.tokens,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }


def unconsolidated_tokens(conversation: Conversation) -> int:
    counted = Message.objects.filter(conversation=conversation, summary__isnull=True).aggregate(t=Sum("token_count"))["t"]
    return counted or 0


def due_conversations(limit: int = 200) -> list:
    """Conversations whose unconsolidated tokens exceed their agent's threshold (free leases only)."""
    now = timezone.now()
    return list(
        Message.objects.filter(summary__isnull=True, token_count__isnull=False, conversation__agent__deleted_at__isnull=True)
        .filter(Q(conversation__consolidation_lease__isnull=True) | Q(conversation__consolidation_lease__lt=now))
        .values("conversation")
        .annotate(tokens=Sum("token_count"))
        .filter(tokens__gt=F("conversation__agent__consolidation_threshold"))
        .order_by("-tokens")
        .values_list("conversation", flat=True)[:limit]
    )


def plan_span(conversation: Conversation) -> Plan | None:
    """The oldest unconsolidated span outside the recent window, up to DREAMER_SPAN_TOKENS."""
    agent = conversation.agent
    keep = set(
        Message.objects.filter(conversation=conversation)
        .order_by("-seq", "-index")
        .values_list("id", flat=True)[: agent.short_term_messages]
    )
    plan = Plan(conversation_id=conversation.id)
    limit = settings.SENTINEL["DREAMER_SPAN_TOKENS"]
    for message in (
        Message.objects.filter(conversation=conversation, summary__isnull=True).order_by("seq", "index").iterator(chunk_size=200)
    ):
        if message.id in keep or not message.embedded or message.token_count is None:
            break  # not yet in long-term memory, or recent: stop here and keep order
        if plan.message_ids and plan.tokens + message.token_count > limit:
            break
        if not plan.message_ids:
            plan.first_seq = message.seq
        plan.message_ids.append(message.id)
        plan.tokens += message.token_count
        plan.last_seq = message.seq
    return plan if len(plan.message_ids) >= 2 else None


def _claim(conversation_id) -> bool:
    now = timezone.now()
    lease = now + timedelta(seconds=settings.SENTINEL["DREAMER_LEASE_SECONDS"])
    return bool(
        Conversation.objects.filter(id=conversation_id)
        .filter(Q(consolidation_lease__isnull=True) | Q(consolidation_lease__lt=now))
        .update(consolidation_lease=lease)
    )


def _release(conversation_id) -> None:
    Conversation.objects.filter(id=conversation_id).update(consolidation_lease=None)


def _transcript(messages: list[Message]) -> str:
    """The span as the model reads it: a date line where the day changes, then `role: text` lines,
    each text once: a line said again in the span, by either side ("Mm, fair enough.", "Thanks!"),
    tells a summary nothing new and is left out (its message is consolidated all the same).
    Prompt processing is most of a consolidation's time on a CPU (bench/HISTORY.md): a timestamp on
    every line costs more tokens than most messages (digits tokenize one by one), and on the dialogue
    benchmark's first 100 messages the repeats were 31 lines, 1,409 -> 1,041 tokens of transcript."""
    lines = []
    said: set[str] = set()
    day = None
    for message in messages:
        content = message.content
        for call in message.tool_calls or []:
            content += f" [called {call.get('function', {}).get('name', '')}]"
        if (text := content.strip()) in said:
            continue
        said.add(text)
        if message.occurred_at.date() != day:
            day = message.occurred_at.date()
            lines.append(f"[{day:%Y-%m-%d}]")
        lines.append(f"{message.role}: {content}")
    return "\n".join(lines)


def _echo_stops(messages: list[Message]) -> list[str]:
    """A line that opens like the transcript's (`user: `) is the model going on with the conversation
    instead of summarising it (SmolLM2-135M does, until max_tokens: 9 s of a consolidation): the
    server stops there. At most four, the API's limit."""
    return [f"\n{role}:" for role in sorted({message.role for message in messages})][:4]


def _without_echo(content: str, transcript: str) -> str:
    """The answer without lines copied from the transcript (a small model's echo is no summary)."""
    said = {line.strip() for line in transcript.splitlines() if line.strip()}
    said |= {line.split(": ", 1)[1] for line in said if ": " in line}  # the echo without its role
    return "\n".join(line for line in content.splitlines() if line.strip() not in said)


def consolidate(
    conversation_id, *, trigger: str = "schedule", dry_run: bool = False, force: bool = False, token_allowance: int | None = None
) -> list[ConsolidationRun]:
    """Consolidate spans of one conversation until it is under its threshold (or `force`: once),
    spending at most `token_allowance` model tokens (default: the per-tenant cap).

    Returns the runs made (empty if another Dreamer holds the conversation or nothing is due).
    """
    if token_allowance is None:
        token_allowance = settings.SENTINEL["DREAMER_MAX_TOKENS_PER_TENANT"]
    if not _claim(conversation_id):
        return []
    runs: list[ConsolidationRun] = []
    spent = 0
    try:
        conversation = Conversation.objects.select_related("agent").get(id=conversation_id)
        while True:
            due = unconsolidated_tokens(conversation) > conversation.agent.consolidation_threshold
            if not (due or (force and not runs)):
                break
            if spent >= token_allowance:
                break
            plan = plan_span(conversation)
            if plan is None:
                break
            if dry_run:
                runs.append(
                    ConsolidationRun.objects.create(
                        tenant_id=conversation.tenant_id,
                        conversation=conversation,
                        status=ConsolidationRun.Status.DRY_RUN,
                        trigger=trigger,
                        message_count=len(plan.message_ids),
                        source_tokens=plan.tokens,
                        finished_at=timezone.now(),
                    )
                )
                break
            run = _consolidate_span(conversation, plan, trigger)
            runs.append(run)
            spent += run.prompt_tokens + run.completion_tokens
            if run.status != ConsolidationRun.Status.SUCCEEDED:
                break
            _claim_extend(conversation_id)
    finally:
        _release(conversation_id)
    return runs


def _claim_extend(conversation_id) -> None:
    lease = timezone.now() + timedelta(seconds=settings.SENTINEL["DREAMER_LEASE_SECONDS"])
    Conversation.objects.filter(id=conversation_id).update(consolidation_lease=lease)


def _consolidate_span(conversation: Conversation, plan: Plan, trigger: str) -> ConsolidationRun:
    started = time.monotonic()
    run = ConsolidationRun.objects.create(
        tenant_id=conversation.tenant_id,
        conversation=conversation,
        trigger=trigger,
        message_count=len(plan.message_ids),
        source_tokens=plan.tokens,
        total_messages=Message.objects.filter(conversation=conversation).count(),
        consolidated_messages=Message.objects.filter(conversation=conversation, summary__isnull=False).count(),
    )
    messages = list(Message.objects.filter(id__in=plan.message_ids).order_by("seq", "index"))
    config = providers.ProviderConfig.for_agent(conversation.agent)
    transcript = _transcript(messages)
    body: dict[str, Any] = {
        "model": config.model,
        "messages": [{"role": "system", "content": PROMPT}, {"role": "user", "content": transcript}],
        "max_tokens": max(128, min(600, plan.tokens // 4)),
        "temperature": 0,
        "stop": _echo_stops(messages),
    }
    prompt_estimate = tokens.count(PROMPT) + tokens.count(transcript) + 2 * tokens.MESSAGE_OVERHEAD
    try:
        reservation = _reserve(conversation, config, body, prompt_estimate)
    except outcomes.Refused as error:
        _finish(run, started, status=ConsolidationRun.Status.FAILED, error=error.as_dict())
        log.info("consolidation not affordable now", extra={"conversation": str(conversation.id), "code": error.code})
        return run
    _stage(run, "prompting")
    asked = time.monotonic()
    try:
        result = providers.complete(config, body)
    except providers.ProviderError as error:
        spend.release(reservation.id)
        _finish(run, started, status=ConsolidationRun.Status.FAILED, error=error.as_dict())
        log.warning("consolidation failed", extra={"conversation": str(conversation.id), "code": error.code})
        return run
    run.prompt_ms = int((time.monotonic() - asked) * 1000)
    run.prompt_tokens = result.prompt_tokens or prompt_estimate
    run.completion_tokens = result.completion_tokens or tokens.count(result.content)
    # Paid for whatever comes of it: settled before anything else can fail.
    spend.settle(
        reservation,
        model=body["model"],
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        actual=spend.cost(conversation.tenant_id, body["model"], config.endpoint, run.prompt_tokens, run.completion_tokens),
    )
    text, found = facts.extract(_without_echo(result.content, transcript), messages)
    text = text or "\n".join(f"- {fact.text}" for fact in found)
    if not text:
        empty = providers.ProviderError(502, "provider_bad_response", "The model returned an empty summary.", retryable=True)
        _finish(run, started, status=ConsolidationRun.Status.FAILED, error=empty.as_dict())
        return run
    _stage(run, "writing")
    fact_memories = _fact_memories(conversation, found)
    with transaction.atomic():
        summary = Summary.objects.create(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            text=text,
            token_count=tokens.count(text),
            source_message_ids=plan.message_ids,
            first_seq=plan.first_seq,
            last_seq=plan.last_seq,
            first_at=messages[0].occurred_at,
            last_at=messages[-1].occurred_at,
            source_tokens=plan.tokens,
            model=result.model,
        )
        marked = Message.objects.filter(id__in=plan.message_ids, summary__isnull=True).update(summary=summary)
        if marked != len(plan.message_ids):
            transaction.set_rollback(True)  # someone consolidated part of this span meanwhile
        elif fact_memories:
            facts.link_superseded(fact_memories)
            Memory.objects.bulk_create(fact_memories)
            indexing.note_memories({conversation.agent_id})
    if marked != len(plan.message_ids):
        _finish(
            run, started, status=ConsolidationRun.Status.FAILED, error={"code": "span_changed", "message": "the span changed meanwhile"}
        )
        return run
    run.summary = summary
    run.facts = len(fact_memories)
    run.consolidated_messages += marked
    _finish(run, started, status=ConsolidationRun.Status.SUCCEEDED)
    log.info("consolidated a span", extra={"conversation": str(conversation.id), "messages": len(plan.message_ids)})
    return run


def _fact_memories(conversation: Conversation, found: list[facts.Fact]) -> list[Memory]:
    """The facts as long-term memories, embedded now (a handful of short texts), not saved yet."""
    if not found:
        return []
    vectors = embeddings.embed([fact.text for fact in found], tenant=conversation.tenant_id)
    model = embeddings.embedder().name
    return [
        Memory(
            tenant_id=conversation.tenant_id,
            agent_id=conversation.agent_id,
            conversation_id=conversation.id,
            kind=MemoryKind.FACT,
            role="fact",
            text=fact.text,
            fact_key=fact.key,
            source_message_ids=fact.source_message_ids,
            occurred_at=fact.occurred_at,
            embedding=vector,
            embedding_model=model,
        )
        for fact, vector in zip(found, vectors, strict=True)
    ]


def _stage(run: ConsolidationRun, stage: str) -> None:
    """Where the run is, visible to the API and the admin while it runs."""
    run.stage = stage
    ConsolidationRun.objects.filter(id=run.id).update(stage=stage)


def _reserve(conversation: Conversation, config: providers.ProviderConfig, body: dict, prompt_tokens: int):
    """Hold the call's worst case on the tenant's budgets, as a turn does; a refusal is outcomes.Refused."""
    try:
        amount = spend.cost(
            conversation.tenant_id, body["model"], config.endpoint, prompt_tokens, body["max_tokens"], refuse_unpriced=config.deployment_key
        )
        return spend.reserve(conversation.tenant_id, None, amount)
    except (spend.UnpricedModel, spend.BudgetExceeded) as refusal:
        raise outcomes.Refused(refusal) from None


def _finish(run: ConsolidationRun, started: float, *, status: str, error: dict | None = None) -> None:
    metrics.CONSOLIDATIONS.labels(status).inc()
    run.status = status
    run.stage = "done"
    run.error = error
    run.duration_ms = int((time.monotonic() - started) * 1000)
    run.finished_at = timezone.now()
    run.save()


def dream(*, dry_run: bool | None = None, concurrency: int = 1) -> dict:
    """One scheduled pass: every due conversation, within the per-run and per-tenant token caps,
    up to `concurrency` at once (threads of the task that runs it, on the memory queue: turns run
    on workers of their own and are never queued behind it). A wave takes at most one conversation
    per tenant, so a tenant's cap is checked between its consolidations as when they ran one by one."""
    conf = settings.SENTINEL
    dry_run = conf["DREAMER_DRY_RUN"] if dry_run is None else dry_run
    allowance, per_tenant = conf["DREAMER_MAX_TOKENS_PER_RUN"], conf["DREAMER_MAX_TOKENS_PER_TENANT"]
    due = due_conversations()
    tenant_of = dict(Conversation.objects.filter(id__in=due).values_list("id", "tenant_id"))
    by_tenant: dict = {}
    spent, runs = 0, 0
    waiting = list(due)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dreamer") as pool:
        while waiting and spent < allowance:
            wave = _wave(waiting, tenant_of, by_tenant, per_tenant, concurrency)
            if not wave:
                break
            share = max(1, (allowance - spent) // len(wave))
            jobs = {conversation_id: _start(pool, len(wave), conversation_id, dry_run, min(share, left)) for conversation_id, left in wave}
            for conversation_id, job in jobs.items():
                made = job.result()
                used = sum(run.prompt_tokens + run.completion_tokens for run in made)
                runs += len(made)
                spent += used
                tenant = tenant_of.get(conversation_id)
                by_tenant[tenant] = by_tenant.get(tenant, 0) + used
    if waiting and spent >= allowance:
        log.info("dreamer stopped at its per-run token cap", extra={"spent": spent})
    return {"runs": runs, "tokens": spent}


def _wave(waiting: list, tenant_of: dict, by_tenant: dict, per_tenant: int, size: int) -> list[tuple]:
    """Up to `size` conversations off the front of `waiting`, one per tenant, each with what its
    tenant may still spend; a tenant that had its share of the run is passed over (and dropped)."""
    wave: list[tuple] = []
    tenants: set = set()
    for conversation_id in list(waiting):
        tenant = tenant_of.get(conversation_id)
        left = per_tenant - by_tenant.get(tenant, 0)
        if left <= 0:
            waiting.remove(conversation_id)  # this tenant had its share of the run; the others still get theirs
            continue
        if tenant in tenants:
            continue
        waiting.remove(conversation_id)
        tenants.add(tenant)
        wave.append((conversation_id, left))
        if len(wave) == size:
            break
    return wave


def _start(pool: ThreadPoolExecutor, wave: int, conversation_id, dry_run: bool, token_allowance: int) -> Future:
    """A wave of one runs here (it needs no thread, and sees this connection's transaction)."""
    if wave == 1:
        done: Future = Future()
        done.set_result(consolidate(conversation_id, dry_run=dry_run, token_allowance=token_allowance))
        return done
    return pool.submit(_consolidate_in_thread, conversation_id, dry_run, token_allowance)


def _consolidate_in_thread(conversation_id, dry_run: bool, token_allowance: int) -> list[ConsolidationRun]:
    try:
        return consolidate(conversation_id, dry_run=dry_run, token_allowance=token_allowance)
    finally:
        db.connection.close()  # this thread's own connection: Django closes only request threads' connections
