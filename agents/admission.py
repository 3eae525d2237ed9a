"""Admitting a chat request: one transaction stores its messages and a queued turn.

Nothing is written unless everything is valid; the turn is enqueued only after the commit, so a
worker never sees a turn that is not in the database yet. A refusal is a domain exception (defined
here, or spend's BudgetExceeded and UnpricedModel, context's ContextLengthExceeded); how a client
sees each is sentinel_site/errors.py's business.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Model

from agents import providers
from agents.models import UNFINISHED, Agent, Conversation, EventKind, Message, MultitaskStrategy, Stop, Turn, TurnEventRecord
from budgets import audit, spend
from budgets.models import ApiKey, Budget, Reservation, Tenant
from memory import context as memory_context
from sentinel_site import config_cache, logs, metrics, tracing
from sentinel_site.db import columns, commit_lazily, from_row, insert, insert_if

log = logging.getLogger(__name__)


class AgentNotFound(Exception):
    """The request's `model` names no live agent of the caller's tenant."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The model `{name}` does not exist or you do not have access to it.")
        self.name = name


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key already admitted a request with another body."""

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used with a different request body.")


class ConversationNotFound(Exception):
    """The request's `conversation` names no conversation of the caller's tenant."""

    def __init__(self) -> None:
        super().__init__("No such conversation.")


class ConversationBusy(Exception):
    """A message for a conversation whose turn still runs, with `multitask_strategy: reject`."""

    def __init__(self, turn_id: uuid.UUID) -> None:
        super().__init__(f"This conversation's turn {turn_id} has not ended; send again once it has (multitask_strategy: reject).")
        self.turn_id = turn_id


class ConversationAgentMismatch(Exception):
    """The request's `conversation` belongs to another agent than its `model`."""

    def __init__(self, owner: str, asked: str) -> None:
        super().__init__(f"This conversation belongs to the agent `{owner}`, not `{asked}`.")


@dataclass(frozen=True)
class Admission:
    turn: Turn
    created: bool  # False when an Idempotency-Key replayed an earlier request
    # Double-texting with interrupt or rollback: the turns before this one the caller stops now that
    # it is committed (agents/control.py; see _double_texting).
    stop: Stop | None = None
    stop_turns: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class BudgetPlan:
    """What admission reserves: the budgets that apply to the call and its worst-case cost."""

    budgets: list[Budget]
    amount: Decimal


@dataclass(frozen=True)
class Asked:
    """One admission's request, as each way of storing it (`_STORES`) takes it."""

    tenant: Tenant
    api_key: ApiKey | None
    agent: Agent
    data: dict[str, Any]
    params: dict[str, Any]
    plan: BudgetPlan
    idempotency_key: str | None
    digest: str
    enqueue: Callable[[Turn], None]
    lazily: bool

    @property
    def api_key_id(self) -> uuid.UUID | None:
        return self.api_key.id if self.api_key else None


def request_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_agent(tenant: Tenant, name: str) -> Agent:
    agent = config_cache.get("agent", (tenant.id, name), lambda: Agent.objects.live().filter(tenant=tenant, name=name).first())
    if agent is None:
        raise AgentNotFound(name)
    return agent


def admit(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    data: dict[str, Any],
    idempotency_key: str | None,
    enqueue: Callable[[Turn], None],
    lazily: bool = False,
) -> Admission:
    """Store the request's messages and a queued turn, atomically; enqueue it after commit.
    `lazily`: the client will hear of the turn only with its answer (a non-streaming wait), whose
    own commit flushes this one: the admission's commit need not wait for the disk (db.commit_lazily).

    In order: an Idempotency-Key seen before answers with its turn; the agent and the call's params
    (the input must fit the agent's context budget); the budget plan (the budgets that apply, a
    fallback model past a soft limit, the worst case at price); then one transaction writes the
    conversation's next turn and reserves the plan's amount. Refusals: over budget rolls all of it
    back and is audited; losing an Idempotency-Key race answers with the winner's turn.
    """
    digest = request_hash(data)
    if idempotency_key and (replayed := _replayed(tenant, idempotency_key, digest)):
        return Admission(replayed, created=False)
    agent = find_agent(tenant, data["model"])
    memory_context.check_input_fits(agent, data["messages"])  # the input is sent whole, or refused here
    params = call_params(agent, data)
    for retry in (False, True):
        plan = plan_budget(tenant, api_key, agent, data["messages"], params)
        try:
            store = _STORES[settings.SENTINEL["ADMISSION_WRITES"]]
            strategy = data.get("multitask_strategy") or agent.multitask_strategy
            if store is _store_in_one_statement and data.get("conversation") is not None and strategy != MultitaskStrategy.ENQUEUE:
                store = _store_held_first  # double-texting decides on the conversation's turns under its row lock
            turn, busy = store(Asked(tenant, api_key, agent, data, params, plan, idempotency_key, digest, enqueue, lazily))
        except spend.BudgetExceeded as exceeded:
            _record_over_budget(exceeded, tenant, api_key, plan.amount)
            raise
        except IntegrityError:
            # Two requests raced with one Idempotency-Key: the loser answers with the winner's turn.
            if idempotency_key and (replayed := _replayed(tenant, idempotency_key, digest)):
                return Admission(replayed, created=False)
            if retry:
                raise
            # Or a budget was deleted by another process within its config-cache check interval
            # (the window's foreign key fails at commit): nothing was written; once more, with the
            # budgets read afresh.
            config_cache.clear()
            continue
        if busy:
            strategy = data.get("multitask_strategy") or agent.multitask_strategy
            return Admission(turn, created=True, stop=STOP_FOR[MultitaskStrategy(strategy)], stop_turns=tuple(busy))
        return Admission(turn, created=True)
    raise AssertionError("unreachable: the second try returns or raises")


def _replayed(tenant: Tenant, idempotency_key: str, digest: str) -> Turn | None:
    turn = Turn.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if turn is not None and turn.request_hash != digest:
        raise IdempotencyKeyReused
    return turn


def call_params(agent: Agent, data: dict[str, Any]) -> dict[str, Any]:
    """The provider params of the call: the request's, then the agent's defaults, and always an output bound."""
    params = {key: data[key] for key in providers.PASSTHROUGH_PARAMS if data.get(key) is not None}
    for key, value in (agent.default_params or {}).items():
        if key in providers.PASSTHROUGH_PARAMS:
            params.setdefault(key, value)
    if data.get("latency_budget_ms") is not None:  # Sentinel-Latency-Budget-Ms (routing/hooks.py): for the route, never sent on
        params["latency_budget_ms"] = data["latency_budget_ms"]
    if params.get("max_tokens") is None and params.get("max_completion_tokens") is None:
        params["max_tokens"] = settings.SENTINEL["DEFAULT_MAX_TOKENS"]  # so the reserved worst case is a true bound
    return params


def plan_budget(tenant: Tenant, api_key: ApiKey | None, agent: Agent, messages: list[dict], params: dict[str, Any]) -> BudgetPlan:
    """The budgets that apply and the call's worst case; past a soft limit, `params` gets the fallback
    model. UnpricedModel if the deployment would pay for a model it has no price for."""
    api_key_id = api_key.id if api_key else None
    budgets = spend.applicable_budgets(tenant.id, api_key_id)
    fallback = spend.fallback_model(tenant.id, api_key_id, budgets)
    if fallback:
        params["model_override"] = fallback
    return BudgetPlan(budgets, worst_case_cost(tenant, agent, messages, params))


def _store(asked: Asked) -> tuple[Turn, list[uuid.UUID]]:
    """The one transaction: the conversation's next seq, the turn, its messages, its first event and
    the reservation; the turn is enqueued once it commits. BudgetExceeded rolls all of it back.
    Hand-written SQL: each row an INSERT of its own model's fields (sentinel_site.db.insert)."""
    with transaction.atomic(), connection.cursor() as cursor:
        turn, busy = _write(cursor, asked)
        spend.reserve(asked.tenant.id, asked.api_key_id, asked.plan.amount, turn_id=turn.id, budgets=asked.plan.budgets, savepoint=False)
        transaction.on_commit(lambda: asked.enqueue(turn))
    return turn, busy


def _store_held_first(asked: Asked) -> tuple[Turn, list[uuid.UUID]]:
    """`_store` with the budget held first, in one statement committed on its own (spend.hold: the
    tenant's budget windows are locked only while the server runs it, not across this transaction's
    round trips), then linked to the turn in the transaction that writes it. BudgetExceeded before
    anything is written; any failure after the hold releases it."""
    # Its own commit need not wait for the disk (this transaction's will); a caller's transaction keeps its setting.
    reservation = spend.hold(
        asked.tenant.id, asked.api_key_id, asked.plan.amount, budgets=asked.plan.budgets, lazily=not connection.in_atomic_block
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            turn, busy = _write(cursor, asked)
            cursor.execute(
                f"UPDATE {connection.ops.quote_name(Reservation._meta.db_table)} SET turn_id = %s WHERE id = %s", [turn.id, reservation.id]
            )
            transaction.on_commit(lambda: asked.enqueue(turn))
    except BaseException:
        try:
            spend.release(reservation.id)
        except Exception:  # the database is gone too: the hold expires (RESERVATION_TTL_SECONDS)
            log.warning("could not release the hold of a failed admission", exc_info=True)
        raise
    return turn, busy


def _store_in_one_statement(asked: Asked) -> tuple[Turn, list[uuid.UUID]]:
    """The admission's rows (the conversation or its next seq, the turn, its messages, its first
    event) written by the budget hold's own statement, only if the hold holds (spend.hold's
    `writes`): one round trip and one commit instead of the hold's and then a transaction's seven.
    All of it or nothing, as before: BudgetExceeded writes nothing, nor does a lost Idempotency-Key
    race (the unique index fails the whole statement), nor a conversation that is not the caller's.
    A continued conversation's next seq is taken by the statement's update of its row, which
    queues racing admissions of one conversation one after the other (multitask_strategy enqueue:
    the others decide under the row lock, in _store_held_first)."""
    tenant, agent, data = asked.tenant, asked.agent, asked.data
    conversation_id = data.get("conversation")
    conversation = Conversation(tenant=tenant, agent=agent, last_seq=1)
    if conversation_id is not None:
        conversation.id = conversation_id
    turn = _new_turn(asked, conversation)
    event = _queued_event(turn, asked)
    if conversation_id is None:
        rows: tuple[Sequence[Model], ...] = ([conversation], [turn], _input_messages(turn, data["messages"]), [event])
        writes = [(f"w{n}", *insert_if(each, spend.IF_HELD)) for n, each in enumerate(rows)]
        requires: tuple[str, list] = ("true", [])
    else:
        writes, requires = _next_seq_writes(tenant, agent, conversation, turn, data["messages"], event)
    plan = asked.plan
    # Inside a caller's transaction (tests), a savepoint keeps a failed statement from ending it.
    with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
        try:
            spend.hold(
                tenant.id, asked.api_key_id, plan.amount, budgets=plan.budgets, turn_id=turn.id, lazily=asked.lazily, writes=writes,
                requires=requires,
            )  # fmt: skip
        except spend.Unmet:
            _refuse_conversation(tenant, agent, conversation_id)
        transaction.on_commit(lambda: asked.enqueue(turn))  # at once, outside a transaction
    if conversation_id is not None:  # the seq the statement took (the conversation carries its id and seq only)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT seq FROM {connection.ops.quote_name(Turn._meta.db_table)} WHERE id = %s", [turn.id])
            turn.seq = conversation.last_seq = cursor.fetchone()[0]
    return turn, []


def _next_seq_writes(
    tenant: Tenant, agent: Agent, conversation: Conversation, turn: Turn, messages: list[dict], event: TurnEventRecord
) -> tuple[list[tuple[str, str, list]], tuple[str, list]]:
    """A continued conversation's part of the one statement: its row's next seq (as `seq`), the
    turn and its messages at that seq; required: the conversation is the tenant's and the agent's."""
    table = connection.ops.quote_name(Conversation._meta.db_table)
    owned = "id = %s AND tenant_id = %s AND agent_id = %s"
    ids = [conversation.id, tenant.id, agent.id]
    seq = ("next_seq", f"UPDATE {table} SET last_seq = last_seq + 1 WHERE {owned} AND {spend.IF_HELD} RETURNING last_seq AS seq", ids)
    at_seq = {"seq": "next_seq.seq"}
    rows = [
        ("turn", *insert_if([turn], "true", computed=at_seq, also_from="next_seq")),
        ("messages", *insert_if(_input_messages(turn, messages), "true", computed=at_seq, also_from="next_seq")),
        ("queued", *insert_if([event], "true", also_from="next_seq")),
    ]
    return [seq, *rows], (f"EXISTS (SELECT 1 FROM {table} WHERE {owned})", ids)


def _refuse_conversation(tenant: Tenant, agent: Agent, conversation_id: Any) -> None:
    """Why the statement's conversation was not the caller's: none of the tenant's, or another agent's."""
    owner = Conversation.objects.filter(id=conversation_id, tenant=tenant).select_related("agent").first()
    if owner is None:
        raise ConversationNotFound
    raise ConversationAgentMismatch(owner.agent.name, agent.name)


_STORES = {"sql": _store, "hold-first": _store_held_first, "statement": _store_in_one_statement}


def _write(cursor, asked: Asked) -> tuple[Turn, list[uuid.UUID]]:
    """The admission's rows, in the caller's transaction: the conversation's next seq, the turn, its
    messages and its first event; and the turns a double-text stops (see _double_texting)."""
    data = asked.data
    if asked.lazily:
        commit_lazily(cursor)
    conversation = _next_in_conversation(cursor, asked.tenant, asked.agent, data.get("conversation"))
    busy = _double_texting(asked.agent, data, conversation) if data.get("conversation") is not None else []
    turn = _new_turn(asked, conversation)
    insert(cursor, [turn])
    insert(cursor, _input_messages(turn, data["messages"]))
    insert(cursor, [_queued_event(turn, asked)])
    return turn, busy


def _new_turn(asked: Asked, conversation: Conversation) -> Turn:
    return Turn(
        tenant=asked.tenant,
        conversation=conversation,
        agent=asked.agent,
        api_key=asked.api_key,
        seq=conversation.last_seq,
        stream=asked.data.get("stream", False),
        params=asked.params,
        idempotency_key=asked.idempotency_key or None,
        request_hash=asked.digest,
        trace_id=logs.trace_id.get() if logs.trace_id.get() != "-" else "",
        traceparent=tracing.current_traceparent(),
    )


def _queued_event(turn: Turn, asked: Asked) -> TurnEventRecord:
    queued = {"message_count": len(asked.data["messages"]), "params": asked.params, "stream": turn.stream}
    return TurnEventRecord(turn=turn, attempt=0, seq=0, kind=EventKind.QUEUED, payload=queued)


def _next_in_conversation(cursor, tenant: Tenant, agent: Agent, conversation_id: uuid.UUID | None) -> Conversation:
    """The conversation to append to, with its next sequence number reserved (row-locked)."""
    if conversation_id is None:
        conversation = Conversation(tenant=tenant, agent=agent, last_seq=1)
        insert(cursor, [conversation])
        return conversation
    table = connection.ops.quote_name(Conversation._meta.db_table)
    cursor.execute(
        f"UPDATE {table} SET last_seq = last_seq + 1 WHERE id = %s AND tenant_id = %s RETURNING {columns(Conversation)}",
        [conversation_id, tenant.id],
    )
    row = cursor.fetchone()
    if row is None:
        raise ConversationNotFound
    conversation = from_row(Conversation, row)
    if conversation.agent_id != agent.id:
        raise ConversationAgentMismatch(conversation.agent.name, agent.name)
    conversation.agent, conversation.tenant = agent, tenant
    return conversation


STOP_FOR = {MultitaskStrategy.INTERRUPT: Stop.INTERRUPT, MultitaskStrategy.ROLLBACK: Stop.ROLLBACK}


def _double_texting(agent: Agent, data: dict[str, Any], conversation: Conversation) -> list[uuid.UUID]:
    """A message for a conversation whose turn has not ended: the request's (or agent's)
    multitask_strategy decides. The caller holds the conversation's row lock (its next seq), so two
    racing messages are decided one after the other. enqueue: the new turn waits, as always; reject:
    ConversationBusy; interrupt or rollback: the unfinished turns before it, for the caller to stop
    once this admission has committed (the new turn runs when they have)."""
    strategy = data.get("multitask_strategy") or agent.multitask_strategy
    if strategy == MultitaskStrategy.ENQUEUE:
        return []  # the common path: no query
    busy = list(Turn.objects.filter(conversation_id=conversation.id, status__in=UNFINISHED).order_by("seq").values_list("id", flat=True))
    if busy and strategy == MultitaskStrategy.REJECT:
        raise ConversationBusy(busy[0])
    return busy


def _input_messages(turn: Turn, messages: list[dict]) -> list[Message]:
    """The request's messages as rows of the turn's conversation, at the turn's seq."""
    return [
        # tenant and conversation are both cached on the turn just created: no query
        Message.from_openai(m, tenant=turn.tenant, conversation=turn.conversation, turn=turn, seq=turn.seq, index=index)
        for index, m in enumerate(messages)
    ]


def _record_over_budget(exceeded: spend.BudgetExceeded, tenant: Tenant, api_key: ApiKey | None, amount: Decimal) -> None:
    """After the rollback: the refusal counted and audited (the entry is the one thing written)."""
    budget = exceeded.budget
    metrics.BUDGET_EXCEEDED.labels(budget.period).inc()
    audit.record(
        "budget.exceeded",
        actor=audit.actor_for_key(api_key),
        tenant_id=tenant.id,
        target=str(budget.id),
        data={"period": budget.period, "limit": str(budget.limit), "requested": str(amount)},
    )


def worst_case_cost(tenant: Tenant, agent: Agent, messages: list[dict], params: dict) -> Decimal:
    """What the call can cost at most: a full context, plus what rides beside the messages (tools,
    a response format's schema), plus every token it may generate, at price. UnpricedModel if the
    deployment would pay for a model it has no price for (SENTINEL_UNPRICED_MODELS=refuse)."""
    config = providers.ProviderConfig.for_agent(agent)
    model = params.get("model_override") or config.model
    input_bound = sum(len(json.dumps(m, separators=(",", ":"))) for m in messages) // 3 + 8 * len(messages)
    prompt_tokens = max(agent.context_budget, input_bound) + spend.request_overhead_tokens(params)
    return spend.cost(tenant.id, model, config.endpoint, prompt_tokens, spend.output_bound(params), refuse_unpriced=config.deployment_key)
