"""Dialogue benchmark (issue 16): does the assembled context hold the evidence for real-shaped questions?

The data (bench/dialogue_data.py, committed as bench/data/dialogue.json) is 28 dated sessions between
two people and 150 questions of five kinds, each with the client ids of its evidence messages. The
history is imported through the API (POST /v1/conversations/{id}/messages, with timestamps and
client ids) and indexed as in production; then every question is asked as the next turn's recall
query and the assembled context checked for its evidence: every evidence message there as itself (the
window's message or its recalled line), or covered by a summary or fact that comes from it (carries its
client id) and says its answer words (`answer` in the data: what the message says that answers the
question). The old reading, by source ids alone (a summary or fact carrying the client id counted
whatever its text said), is reported beside it after consolidation: there it overstated.

Per kind it reports the share of questions whose evidence is in the context, where the evidence
that is missing was lost (not among the vector retriever's top k, nor full text's, nor in the fused
candidates, or in them but not chosen within the recall limit and the budget), the context size
against the full history, and the retrieval latency (query embedding + context assembly).

Consolidation is left out by default (the local model takes minutes for 1,000 messages on a shared
machine); SENTINEL_BENCH_DIALOGUE_CONSOLIDATE=1 consolidates first and asks again.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from functools import partial

from django.test import Client

from agents.models import Agent, Conversation, Message
from bench import dialogue_consolidation, dialogue_data
from budgets.models import ApiKey, Tenant
from memory import dreamer, embeddings, indexing, search
from memory.context import Piece, assemble

KINDS = ["single", "temporal", "multi_hop", "updated", "adversarial"]
LABELS = {
    "single": "single fact, paraphrased",
    "temporal": "temporal (when ...)",
    "multi_hop": "multi-hop (two sessions)",
    "updated": "updated fact (the later value)",
    "adversarial": "adversarial (not in the history)",
}
HEADING = "## Memory on multi-session dialogue (issue 16)"
# Memories recalled per question: what fills the 2,048-token budget with this data's short lines
# (the default agent's 8 left two thirds of it unused and found 82% of single facts, 24% of multi-hop).
RECALL_LIMIT = int(os.environ.get("SENTINEL_BENCH_DIALOGUE_RECALL", "48"))


@dataclass
class Asked:
    kind: str
    in_context: bool  # strict: each evidence message as itself, or in a summary or fact from it that says its answer
    in_context_by_ids: bool  # the old reading: a piece carrying each evidence message's client id, whatever its text
    stage: str  # where missing evidence was lost: "" (found), retrievers, fusion, choice, wording
    tokens: int
    latency_ms: float
    recalled: int
    word_hits: int  # recalled pieces found by full text (adversarial: spurious word matches)


@dataclass
class Result:
    messages: int = 0
    history_tokens: int = 0
    index_seconds: float = 0.0
    asked: dict[str, list[Asked]] = field(default_factory=dict)  # mode -> answers
    consolidation_seconds: float | None = None
    profiles: list[dialogue_consolidation.Profile] = field(default_factory=list)


def _import(data: dict) -> tuple[Conversation, Agent]:
    """A tenant, key and agent; the history imported through the API as a client would."""
    tenant = Tenant.objects.create(name=f"dialogue-{int(time.time() * 1000)}")
    _, key = ApiKey.issue(tenant, role="developer", name="dialogue-bench")
    agent = Agent.objects.create(
        tenant=tenant,
        name="dialogue",
        system_prompt="You are Jonas's assistant; you remember what Mara and Jonas told each other.",
        context_budget=2048,
        short_term_messages=12,
        short_term_tokens=1024,
        recall_limit=RECALL_LIMIT,
        consolidation_threshold=4000,
    )
    conversation = Conversation.objects.create(tenant=tenant, agent=agent, title="Mara and Jonas")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    messages = data["messages"]
    for start in range(0, len(messages), 500):
        response = client.post(
            f"/v1/conversations/{conversation.id}/messages", {"messages": messages[start : start + 500]}, content_type="application/json"
        )
        assert response.status_code == 201, response.content
    return conversation, agent


def _client_ids(conversation) -> dict[str, str]:
    """Message id (str) -> client id."""
    return {str(mid): cid for mid, cid in Message.objects.filter(conversation=conversation).values_list("id", "client_id")}


def _ask(conversation, question: dict, text_of: dict[str, str], memory_of: dict[str, str]) -> Asked:
    t0 = time.perf_counter()
    context = assemble(conversation, query=question["question"], embed=partial(embeddings.embed_query, tenant=conversation.tenant_id))
    latency = (time.perf_counter() - t0) * 1000
    vector = embeddings.embed_query([question["question"]], conversation.tenant_id)[0]  # for the stage diagnosis only, after timing
    carried = {cid for piece in context.pieces for cid in piece.client_ids}
    wanted = set(question["evidence"])
    recalled = [piece for piece in context.pieces if piece.kind == "recalled"]
    by_ids = bool(wanted) and wanted <= carried
    message_memories = set(memory_of.values())
    found = bool(wanted) and all(holds(context.pieces, cid, question, text_of, message_memories) for cid in wanted)
    if found or not wanted:
        stage = ""
    elif by_ids:
        stage = "wording"  # every evidence message carried, but some only by a piece that does not say its answer
    else:
        stage = _lost_at(conversation, question, vector, wanted - carried, memory_of)
    return Asked(
        kind=question["kind"],
        in_context=found,
        in_context_by_ids=by_ids,
        stage=stage,
        tokens=context.total_tokens,
        latency_ms=latency,
        recalled=len(recalled),
        word_hits=sum(1 for piece in recalled if piece.why and "text_rank" in piece.why),
    )


def holds(pieces: list[Piece], client_id: str, question: dict, text_of: dict[str, str], message_memory_ids: set[str]) -> bool:
    """Whether the context holds evidence message `client_id` for `question`: as itself (a window
    message, or the recalled line of its own message memory), or in a summary or fact taken from it
    (carrying its client id) whose rendered text says the answer words that message holds."""
    entries = dialogue_data.answer_of(question["answer"], text_of[client_id])
    for piece in pieces:
        if client_id not in piece.client_ids:
            continue
        if piece.kind == "recent" or (piece.kind == "recalled" and piece.memory_id in message_memory_ids):
            return True
        if piece.kind in ("summary", "recalled") and dialogue_data.says(piece.text, entries):
            return True
    return False


def _lost_at(conversation, question: dict, vector, missing: set[str], memory_of: dict[str, str]) -> str:
    """Which stage lost the missing evidence: the retrievers (in neither the vector top k nor among
    the full-text hits), fusion (a retriever had it, the fused candidates and their neighbours do
    not), or the choice (a candidate, left out by the recall limit, the score floor or the budget)."""
    agent = conversation.agent
    k = agent.recall_limit * 2
    hits = search.hybrid(conversation.tenant_id, vector, question["question"], k=k, agent_id=agent.id)
    nearest = {str(hit.memory.id) for hit in search.search(conversation.tenant_id, vector, k=k, agent_id=agent.id)}
    wanted = {memory_of[cid] for cid in missing if cid in memory_of}
    candidates = {str(hit.memory.id) for hit in hits}
    if wanted <= candidates:
        return "choice"
    if wanted & (nearest | {str(hit.memory.id) for hit in hits if hit.text_rank is not None}):
        return "fusion"
    return "retrievers"


def run(*, consolidate: bool | None = None) -> Result:
    data = dialogue_data.load()
    result = Result(messages=len(data["messages"]))
    embeddings.embed(["warm up the model before timing"])
    conversation, agent = _import(data)
    started = time.monotonic()
    indexing.index_pending(limit=512)
    result.index_seconds = time.monotonic() - started
    agent.refresh_from_db(fields=["has_memories"])
    conversation.agent = agent
    client_of = _client_ids(conversation)
    memory_of = _memories_by_client_id(conversation, client_of)
    text_of = {message["client_id"]: message["content"] for message in data["messages"]}
    result.asked["recall"] = [_ask(conversation, q, text_of, memory_of) for q in data["questions"]]
    result.history_tokens = assemble(conversation).history_tokens
    if os.environ.get("SENTINEL_BENCH_DIALOGUE_PROFILE", "1") == "1":
        result.profiles = dialogue_consolidation.run()
    consolidate = os.environ.get("SENTINEL_BENCH_DIALOGUE_CONSOLIDATE") == "1" if consolidate is None else consolidate
    if consolidate:
        t0 = time.monotonic()
        dreamer.consolidate(conversation.id, trigger="bench", force=True, token_allowance=10**7)
        indexing.index_pending()
        result.consolidation_seconds = time.monotonic() - t0
        result.asked["consolidated"] = [_ask(conversation, q, text_of, memory_of) for q in data["questions"]]
    return result


def _memories_by_client_id(conversation, client_of: dict[str, str]) -> dict[str, str]:
    from memory.models import Memory

    return {
        client_of[str(mid)]: str(memory_id)
        for memory_id, mid in Memory.objects.filter(conversation=conversation, kind="message").values_list("id", "message_id")
    }


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "n/a"


def report(result: Result) -> list[str]:
    lines = [
        HEADING,
        "",
        f"bench/data/dialogue.json (authored in bench/dialogue_data.py): {result.messages:,} messages in 28 dated sessions between "
        f"two people, imported through the API with their timestamps (full history {result.history_tokens:,} tokens), "
        "150 questions of five kinds with their evidence messages; every paraphrased question shares no content word with "
        f"its evidence (checked when the data is written). Each question is the next turn's recall query; the context "
        f"(budget 2,048 tokens, recent window 12 messages, recall {RECALL_LIMIT} by hybrid search: full text + vectors, reciprocal-rank "
        "fusion of distinct texts, a third variant of a line two chosen ones follow taken last, neighbours of a hit) is "
        "checked for the evidence: each evidence message there as itself (a window message or "
        "its recalled line), or in a summary or fact taken from it (carrying its client id) whose text says that message's "
        "answer words (each question's `answer` in the data, words of its evidence messages; checked when the data is written). "
        f"Embeddings {embeddings.model_name()}; indexing "
        f"{result.index_seconds:.1f} s. Latency: query embedding + context assembly, in process, on a shared 2-core machine "
        "(noisy: other engineers' runs beside it).",
        "",
    ]
    for mode, asked in result.asked.items():
        title = "window + hybrid recall" if mode == "recall" else f"after consolidation ({result.consolidation_seconds:.0f} s)"
        # Before consolidation every piece is a message, so the two readings agree; after it they need not.
        both = mode != "recall"
        found_header = "evidence in context: strict (by source ids)" if both else "evidence in context"
        lost_header = "lost at: retrievers / fusion / choice / wording" if both else "lost at: retrievers / fusion / choice"
        stages = ("retrievers", "fusion", "choice", "wording") if both else ("retrievers", "fusion", "choice")
        lines += [
            f"**{title}**",
            "",
            f"| kind | questions | {found_header} | {lost_header} | context tokens (mean, of history) | latency p50 / p95 | target |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            rows = [a for a in asked if a.kind == kind]
            if not rows:
                continue
            tokens_ = statistics.mean(a.tokens for a in rows)
            ms = sorted(a.latency_ms for a in rows)
            share = f"{tokens_:,.0f} ({100 * tokens_ / max(1, result.history_tokens):.1f}%)"
            latency = f"{statistics.median(ms):.1f} / {ms[int(0.95 * (len(ms) - 1))]:.1f} ms"
            if kind == "adversarial":
                spurious = sum(1 for a in rows if a.word_hits)
                lines.append(
                    f"| {LABELS[kind]} | {len(rows)} | nothing to find: {statistics.mean(a.recalled for a in rows):.1f} recalled lines "
                    f"on average, {_pct(spurious, len(rows))} with a word match | | {share} | {latency} | the context does not "
                    "pretend (lines are dated and marked 'may be relevant') |"
                )
                continue
            found = sum(a.in_context for a in rows)
            shown = _pct(found, len(rows))
            if both:
                shown += f" ({_pct(sum(a.in_context_by_ids for a in rows), len(rows))})"
            lost = "/".join(str(sum(1 for a in rows if a.stage == stage)) for stage in stages)
            met = "met" if found / len(rows) >= 0.9 and tokens_ <= 2048 else "**not met**"
            target = f">= 90% at <= 2,048 tokens: {met}" + (" (strict)" if both else "")
            lines.append(f"| {LABELS[kind]} | {len(rows)} | {shown} | {lost} | {share} | {latency} | {target} |")
        lines.append("")
    lines += [
        f"Lost at *retrievers*: the evidence was in neither the vector retriever's top {2 * RECALL_LIMIT} nor full text's "
        "(paraphrases share no word, so only the embedding can find them); *fusion*: a retriever had it but reciprocal-rank "
        f"fusion left it out of the fused {2 * RECALL_LIMIT} and no hit brought it along as a neighbour; *choice*: a candidate, "
        f"not chosen within the recall limit ({RECALL_LIMIT}), the score floor or the budget; *wording* (after consolidation): "
        "every evidence message was carried, but some only by a summary or fact whose text does not say its answer words. "
        "After consolidation *strict* is the measure (the target is judged on it); *by source ids* is the reading this "
        "benchmark used before, which counted a summary or fact as holding the evidence because the evidence message was "
        "among its sources, whatever its text said. With the default agent's recall "
        "limit of 8 (`python -m bench.dialogue_probe` with SENTINEL_BENCH_DIALOGUE_RECALL=8, window + recall, 2026-12-02, "
        "bench/HISTORY.md row 43) the context held 92% of single facts, 88% temporal, 44% multi-hop, 75% updated, in about 680 "
        "tokens (before that row: 82%, 68%, 24%, 70% in about 600). "
        "`make bench BENCH_ARGS=--only=dialogue` runs this section alone (SENTINEL_BENCH_DIALOGUE_RECALL sets the limit).",
        "",
    ]
    return lines + (dialogue_consolidation.report(result.profiles) if result.profiles else [])
