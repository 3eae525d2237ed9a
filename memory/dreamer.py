"""The Dreamer: consolidates long conversations into summaries, oldest span first.

A conversation is consolidated by one Dreamer at a time: it is claimed with a conditional update
of its lease (the same shape as a turn claim), and the span is marked consolidated only if none of
its messages was marked meanwhile. The summary is written and the span marked in one transaction,
after the model answered: a failure anywhere leaves the span unconsolidated for the next run.
Messages are never deleted, and only messages already in long-term memory (embedded) are
consolidated, so every consolidated fact stays recallable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from agents import providers
from agents.models import Conversation, Message
from memory import tokens
from memory.models import ConsolidationRun, Summary
from sentinel_site import metrics

log = logging.getLogger(__name__)

PROMPT = (
    "You are the memory of an assistant. Rewrite the conversation excerpt below as a compact record that a "
    "later reader can rely on. Keep every concrete fact: names, numbers, dates, places, preferences, "
    "decisions, commitments and open questions. Use short bullet points in the third person. Do not add "
    "anything that is not in the excerpt."
)


@dataclass
class Plan:
    """What one consolidation step would take."""

    conversation_id: str
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
        Message.objects.filter(summary__isnull=True, token_count__isnull=False)
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
    """The span as the model reads it: a date line where the day changes, then `role: text` lines.
    A timestamp on every line cost about 15 tokens a message (digits tokenize one by one): 65% more
    prompt than the messages themselves, and prompt processing is most of a consolidation's time on
    a CPU (issue 6, bench/HISTORY.md row 16)."""
    lines = []
    day = None
    for message in messages:
        if message.occurred_at.date() != day:
            day = message.occurred_at.date()
            lines.append(f"[{day:%Y-%m-%d}]")
        content = message.content
        for call in message.tool_calls or []:
            content += f" [called {call.get('function', {}).get('name', '')}]"
        lines.append(f"{message.role}: {content}")
    return "\n".join(lines)


def consolidate(
    conversation_id, *, trigger: str = "schedule", dry_run: bool = False, force: bool = False, token_allowance: int | None = None
) -> list[ConsolidationRun]:
    """Consolidate spans of one conversation until it is under its threshold (or `force`: once).

    Returns the runs made (empty if another Dreamer holds the conversation or nothing is due).
    """
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
            if token_allowance is not None and spent >= token_allowance:
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
    )
    messages = list(Message.objects.filter(id__in=plan.message_ids).order_by("seq", "index"))
    config = providers.ProviderConfig.for_agent(conversation.agent)
    body = {
        "model": config.model,
        "messages": [{"role": "system", "content": PROMPT}, {"role": "user", "content": _transcript(messages)}],
        "max_tokens": max(128, min(600, plan.tokens // 4)),
        "temperature": 0,
    }
    try:
        result = providers.complete(config, body)
        if not result.content.strip():
            raise providers.ProviderError(502, "provider_bad_response", "The model returned an empty summary.", retryable=True)
    except providers.ProviderError as error:
        _finish(run, started, status=ConsolidationRun.Status.FAILED, error=error.as_dict())
        log.warning("consolidation failed", extra={"conversation": str(conversation.id), "code": error.code})
        return run
    text = result.content.strip()
    with transaction.atomic():
        summary = Summary.objects.create(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            text=text,
            token_count=tokens.count(text),
            source_message_ids=plan.message_ids,
            first_seq=plan.first_seq,
            last_seq=plan.last_seq,
            source_tokens=plan.tokens,
            model=result.model,
        )
        marked = Message.objects.filter(id__in=plan.message_ids, summary__isnull=True).update(summary=summary)
        if marked != len(plan.message_ids):
            transaction.set_rollback(True)  # someone consolidated part of this span meanwhile
    if marked != len(plan.message_ids):
        _finish(
            run, started, status=ConsolidationRun.Status.FAILED, error={"code": "span_changed", "message": "the span changed meanwhile"}
        )
        return run
    run.summary = summary
    run.prompt_tokens = result.prompt_tokens or tokens.count(body["messages"][1]["content"])
    run.completion_tokens = result.completion_tokens or summary.token_count
    _finish(run, started, status=ConsolidationRun.Status.SUCCEEDED)
    log.info("consolidated a span", extra={"conversation": str(conversation.id), "messages": len(plan.message_ids)})
    return run


def _finish(run: ConsolidationRun, started: float, *, status: str, error: dict | None = None) -> None:
    metrics.CONSOLIDATIONS.labels(status).inc()
    run.status = status
    run.error = error
    run.duration_ms = int((time.monotonic() - started) * 1000)
    run.finished_at = timezone.now()
    run.save()


def dream(*, dry_run: bool | None = None) -> dict:
    """One scheduled pass: every due conversation, within the per-run token cap."""
    dry_run = settings.SENTINEL["DREAMER_DRY_RUN"] if dry_run is None else dry_run
    allowance = settings.SENTINEL["DREAMER_MAX_TOKENS_PER_RUN"]
    spent, runs = 0, 0
    for conversation_id in due_conversations():
        if spent >= allowance:
            log.info("dreamer stopped at its per-run token cap", extra={"spent": spent})
            break
        made = consolidate(conversation_id, dry_run=dry_run, token_allowance=allowance - spent)
        runs += len(made)
        spent += sum(run.prompt_tokens + run.completion_tokens for run in made)
    return {"runs": runs, "tokens": spent}
