"""Memory benchmark: does a small context still carry facts planted long ago?

Generates long multi-session conversations (about 26K tokens each, the size the issue's anchor
uses) with facts planted early and asked about at the end, among distractors on the same topics.
For every question it assembles the context the next turn would send, and reports its size against
the full history and whether the planted fact is in it: first with the recent window and recall
only, then after the Dreamer consolidated the conversation with the real local model. It also
times indexing (tokens + embeddings), consolidation per 100 messages and memory search.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent, Conversation, Message
from bench import texts as bench_texts
from budgets.models import Tenant
from memory import dreamer, embeddings, indexing, search
from memory.context import assemble
from memory.models import Memory

FACTS = [
    ("My sister's name is Ingrid and she lives in Trondheim.", "What is my sister called?", "Ingrid"),
    ("I am allergic to peanuts, so please remember that.", "What food am I allergic to?", "peanut"),
    ("My car is a blue 2014 Volvo V70.", "What car do I drive?", "Volvo"),
    ("I work as a veterinary nurse at a clinic downtown.", "What is my job?", "veterinary"),
    ("My flight to Lisbon leaves on the 3rd of March.", "When is my flight to Lisbon?", "3rd of March"),
    ("Our wifi password at the cabin is blue-heron-77.", "What is the cabin wifi password?", "blue-heron-77"),
    ("My daughter Maya turns seven on June 12.", "When is Maya's birthday?", "June 12"),
    ("I keep my spare key under the green flower pot.", "Where is my spare key?", "green flower pot"),
    ("My favourite author is Ursula K. Le Guin.", "Who is my favourite author?", "Le Guin"),
    ("The dentist appointment is at 9:40 on Thursday.", "What time is my dentist appointment?", "9:40"),
]

TOPICS = {
    "cooking": ["a lentil soup", "sourdough bread", "a mushroom risotto", "pancakes", "a curry with chickpeas", "roast vegetables"],
    "travel": [
        "a train trip through the Alps",
        "a weekend in Copenhagen",
        "camping by a lake",
        "a ferry to the islands",
        "a hike in Scotland",
    ],
    "work": ["the quarterly report", "a tricky spreadsheet", "the new project plan", "a long meeting", "an email from a client"],
    "garden": ["the tomato plants", "pruning the apple tree", "planting tulip bulbs", "the compost heap", "slugs on the lettuce"],
    "health": ["a morning run", "stretching exercises", "sleeping better", "drinking more water", "a yoga class"],
    "people": ["my neighbour Tom", "an old school friend", "my colleague Priya", "my uncle in Bergen", "a new friend from the choir"],
    "things": ["a new bicycle", "the broken dishwasher", "a second-hand piano", "the family car's tyres", "a leaking kitchen tap"],
}
USER_LINES = [
    "I've been thinking about {x} again today.",
    "Do you have any advice about {x}?",
    "Yesterday I spent most of the afternoon on {x}.",
    "What would you suggest for {x} this week?",
    "Can we go back to {x} for a moment?",
    "I'm not sure how to handle {x}, honestly.",
]
ASSISTANT_LINES = [
    "That sounds worthwhile. With {x}, it often helps to start small and keep notes on what works.",
    "A good approach to {x} is to plan a little ahead and leave room for surprises.",
    "Many people find {x} easier once they break it into a few simple steps.",
    "It might help to set aside a fixed time for {x} and see how it goes for a week.",
    "I'd suggest checking what you already have before you start on {x}.",
]

# The embedding models compared side by side (issue 13); OpenAI's needs the network and is left out.
EMBEDDING_KINDS = {
    "static": "static, distilled from MiniLM (model2vec)",
    "onnx": "all-MiniLM-L6-v2, int8 (ONNX Runtime)",
    "local": "all-MiniLM-L6-v2 (sentence-transformers)",
}


@dataclass
class Result:
    conversations: int = 0
    messages: int = 0
    history_tokens: list[int] = field(default_factory=list)
    context_tokens: dict[str, list[int]] = field(default_factory=lambda: {"recall": [], "consolidated": []})
    found: dict[str, list[bool]] = field(default_factory=lambda: {"recall": [], "consolidated": []})
    index_seconds: float = 0.0
    consolidation: list[tuple[int, float]] = field(default_factory=list)  # (messages, seconds)
    search_ms: dict[str, list[float]] = field(default_factory=dict)
    hnsw_recall: float = 0.0
    memories: int = 0
    model: str = ""
    embedding_costs: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> measure -> value
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)  # MiniLM's runtimes side by side: label -> measure -> value


def _conversation_texts(rng: random.Random, facts: list[tuple[str, str, str]], target_messages: int) -> list[tuple[str, str]]:
    subjects = [s for items in TOPICS.values() for s in items]
    lines: list[tuple[str, str]] = []
    plant_at = sorted(rng.sample(range(4, target_messages // 5), len(facts)))
    fact_iter = iter(facts)
    for i in range(target_messages):
        subject = rng.choice(subjects)
        if i % 2 == 0:
            if plant_at and i >= plant_at[0]:
                plant_at.pop(0)
                lines.append(("user", next(fact_iter)[0]))
                continue
            lines.append(("user", rng.choice(USER_LINES).format(x=subject)))
        else:
            extra = " " + rng.choice(ASSISTANT_LINES).format(x=rng.choice(subjects)) if rng.random() < 0.6 else ""
            lines.append(("assistant", rng.choice(ASSISTANT_LINES).format(x=subject) + extra))
    return lines


def build(rng: random.Random, conversations: int, messages_each: int, facts_each: int) -> tuple[Tenant, list]:
    tenant = Tenant.objects.create(name=f"bench-{int(time.time() * 1000)}")
    agent = Agent.objects.create(
        tenant=tenant,
        name="bench",
        system_prompt="You are a helpful assistant with a long memory.",
        context_budget=2048,
        short_term_messages=12,
        short_term_tokens=1024,
        recall_limit=8,
        consolidation_threshold=4000,
    )
    plan = []
    start = datetime(2026, 1, 1, 9, tzinfo=UTC)
    for c in range(conversations):
        facts = rng.sample(FACTS, facts_each)
        conversation = Conversation.objects.create(tenant=tenant, agent=agent, last_seq=1, title=f"bench {c}")
        texts = _conversation_texts(rng, facts, messages_each)
        # multi-session: a new day every 80 messages
        Message.objects.bulk_create(
            Message(
                tenant=tenant,
                conversation=conversation,
                seq=1,
                index=i,
                role=role,
                content=text,
                occurred_at=start + timedelta(days=i // 80, minutes=i),
            )
            for i, (role, text) in enumerate(texts)
        )
        plan.append((conversation, facts))
    return tenant, plan


def _rendered(context) -> str:
    return "\n".join(str(m.get("content") or "") for m in context.messages)


def _ask_all(plan, mode: str, result: Result) -> None:
    for conversation, facts in plan:
        for _, question, answer in facts:
            context = assemble(conversation, query=question, embed=embeddings.embed)
            result.context_tokens[mode].append(context.total_tokens)
            result.found[mode].append(answer.lower() in _rendered(context).lower())
            if mode == "recall":
                result.history_tokens.append(context.history_tokens)


def run(
    *,
    conversations: int = 8,
    messages_each: int = 1000,
    facts_each: int = 5,
    consolidate_conversations: int = 1,
    consolidation_budget_s: float = 300.0,
    seed: int = 7,
    compare_embeddings: tuple[str, ...] = tuple(EMBEDDING_KINDS),
) -> Result:
    rng = random.Random(seed)
    result = Result(conversations=conversations)
    tenant, plan = build(rng, conversations, messages_each, facts_each)
    result.messages = conversations * messages_each

    embeddings.embed(["warm up the model before timing"])
    started = time.monotonic()
    indexing.index_pending(limit=512)
    result.index_seconds = time.monotonic() - started
    for conversation, _ in plan:
        conversation.agent.refresh_from_db(fields=["has_memories"])  # as a turn's claim reads it, after indexing
    result.memories = Memory.objects.filter(tenant=tenant).count()

    _ask_all(plan, "recall", result)
    result.model = embeddings.embedder().name
    configured = settings.SENTINEL["EMBEDDINGS"]
    for kind in sorted(compare_embeddings, key=lambda kind: kind == configured):  # the configured one last: its vectors stay
        result.embedding_costs[kind] = embedding_costs(kind, plan)
    indexing._none_stale.clear()
    while indexing.reembed_stale(limit=512):  # back to the configured model's vectors, if it was not compared
        pass
    if "onnx" in compare_embeddings and "local" in compare_embeddings:
        result.agreement = runtime_agreement()

    # search latency (query embedding + search) over all this tenant's memories: the exact scan used
    # at this size, and the HNSW index forced, with its recall@10 against the exact answer
    questions = [q for _, facts in plan for _, q, _ in facts]
    vectors = embeddings.embed(questions, tenant=tenant.id)
    conf = settings.SENTINEL
    for mode, exact_max in (("exact", 10**9), ("hnsw", 0)):
        settings.SENTINEL = {**conf, "EXACT_SEARCH_MAX": exact_max}
        for question in questions * 3:
            t0 = time.perf_counter()
            search.search(tenant.id, embeddings.embed([question], tenant=tenant.id)[0], k=10)
            result.search_ms.setdefault(mode, []).append((time.perf_counter() - t0) * 1000)
    settings.SENTINEL = {**conf, "EXACT_SEARCH_MAX": 10**9}
    exact_ids = [{h.memory.id for h in search.search(tenant.id, v, k=10)} for v in vectors]
    settings.SENTINEL = {**conf, "EXACT_SEARCH_MAX": 0}
    hnsw_ids = [{h.memory.id for h in search.search(tenant.id, v, k=10)} for v in vectors]
    settings.SENTINEL = conf
    result.hnsw_recall = sum(len(a & b) for a, b in zip(exact_ids, hnsw_ids, strict=True)) / max(1, sum(len(a) for a in exact_ids))

    # consolidation with the real local model, within a time budget
    deadline = time.monotonic() + consolidation_budget_s
    consolidated = []
    for conversation, facts in plan[:consolidate_conversations]:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            # one span per call (token_allowance), so the time budget is checked between spans; left
            # alone, one call consolidates the whole conversation, minutes with the local model
            runs = dreamer.consolidate(conversation.id, trigger="bench", force=True, token_allowance=1)
            if not runs or runs[-1].status != "succeeded":
                break
            result.consolidation.append((sum(r.message_count for r in runs), time.monotonic() - t0))
            if dreamer.unconsolidated_tokens(conversation) <= conversation.agent.consolidation_threshold:
                break
        indexing.index_pending()
        consolidated.append((conversation, facts))
    _ask_all(consolidated, "consolidated", result)
    return result


def _distinct_texts(n: int, tag: str) -> list[str]:
    """Chat-like texts, none seen before (no cache can answer them)."""
    rng = random.Random(tag)
    subjects = [s for items in TOPICS.values() for s in items]
    return [f"{rng.choice(USER_LINES).format(x=rng.choice(subjects))} ({tag} {i})" for i in range(n)]


def _cpu_ms(call, texts_per_call: int, calls: int) -> list[float]:
    """CPU time of the whole process (the local model runs on a thread of its own) per text."""
    samples = []
    for _ in range(calls):
        t0 = time.process_time()
        call()
        samples.append((time.process_time() - t0) * 1000 / texts_per_call)
    return samples


def _recall_skip(kind: str, tenant) -> dict[str, float]:
    """A turn's context assembly for an agent with no memories, recall skipped (Agent.has_memories
    false) and, for comparison, run anyway: statements and CPU per assembly, a new query each time."""
    agent = Agent.objects.create(tenant=tenant, name=f"no-memories-{kind}")
    conversation = Conversation.objects.create(tenant=tenant, agent=agent, last_seq=1)
    Message.objects.bulk_create(
        Message(tenant=tenant, conversation=conversation, seq=1, index=i, role=("user", "assistant")[i % 2], content=f"Line {i}.")
        for i in range(4)
    )
    costs: dict[str, float] = {}
    for flag in (False, True):
        agent.has_memories = flag
        cpu, statements = [], 0
        for i in range(60):
            Message.objects.filter(conversation=conversation, index=2).update(content=f"And the roses, {kind} {flag} {i}?")
            t0 = time.process_time()
            with CaptureQueriesContext(connection) as queries:
                assemble(conversation, embed=partial(embeddings.embed_query, tenant=conversation.tenant_id))
            cpu.append((time.process_time() - t0) * 1000)
            statements = len(queries)
        costs[f"assemble_ms_{flag}"], costs[f"assemble_sql_{flag}"] = statistics.median(cpu), statements
    return costs


def embedding_costs(kind: str, plan) -> dict[str, float]:
    """One embedding model measured in this process: loading, one text at a time (a turn's query),
    in batches of 32 (indexing), through embed() with its cache; then the planted facts found by
    recall once every memory of the run is re-embedded with it (indexing.reembed_stale)."""
    conf = settings.SENTINEL
    settings.SENTINEL = {**conf, "EMBEDDINGS": kind}
    embeddings.embedder.cache_clear()
    indexing._none_stale.clear()
    try:
        t0 = time.monotonic()
        model = embeddings.embedder()
        model.embed(["load and warm up"], urgent=True)
        costs = {"load_s": time.monotonic() - t0}
        singles = iter(_distinct_texts(400, f"{kind} single"))
        one = sorted(_cpu_ms(lambda: model.embed([next(singles)], urgent=True), 1, 400))
        costs["one_p50_ms"], costs["one_mean_ms"] = statistics.median(one), statistics.mean(one)
        batches = iter(_distinct_texts(32 * 20, f"{kind} batch")[i : i + 32] for i in range(0, 32 * 20, 32))
        costs["batch_ms"] = statistics.mean(_cpu_ms(lambda: model.embed(next(batches)), 32, 20))
        through = iter(_distinct_texts(200, f"{kind} embed"))
        costs["embed_ms"] = statistics.mean(_cpu_ms(lambda: embeddings.embed_query([next(through)], "bench"), 1, 200))
        t0 = time.monotonic()
        reembedded = 0
        while step := indexing.reembed_stale(limit=512):
            reembedded += step
        costs["reembed_ms"] = 1000 * (time.monotonic() - t0) / max(1, reembedded)
        found: list[bool] = []
        for conversation, facts in plan:
            for _, question, answer in facts:
                context = assemble(conversation, query=question, embed=embeddings.embed)
                found.append(answer.lower() in _rendered(context).lower())
        costs["found"] = sum(found) / max(1, len(found))
        costs["questions"] = len(found)
        costs.update(_recall_skip(kind, plan[0][0].tenant))
        return costs
    finally:
        settings.SENTINEL = conf
        embeddings.embedder.cache_clear()
        indexing._none_stale.clear()


def _agreement_texts(n: int) -> list[str]:
    """Distinct texts of both kinds the benchmarks send: chat lines, and run-tagged random words (bench/texts.py)."""
    half = n // 2
    rng = random.Random("agreement")
    subjects = [s for items in TOPICS.values() for s in items]
    chat = [
        rng.choice((rng.choice(USER_LINES), rng.choice(ASSISTANT_LINES))).format(x=rng.choice(subjects)) + f" ({i})" for i in range(half)
    ]
    return [*chat, *(bench_texts.distinct() for _ in range(n - half))]


def runtime_agreement(n: int = 300) -> dict[str, dict[str, float]]:
    """all-MiniLM-L6-v2 through torch (the `local` adapter), ONNX Runtime fp32 and ONNX Runtime int8
    (the `onnx` adapter), on the same distinct texts, each model called on this thread (one torch
    thread, one ONNX Runtime intra-op thread): CPU per message one text at a time and in batches of
    32, and how close each one's vectors are to torch's (cosine; and each text's nearest other text,
    the same one or not)."""
    corpus = _agreement_texts(n)
    with tempfile.TemporaryDirectory(dir=settings.SENTINEL["STATIC_EMBEDDINGS_DIR"]) as scratch:
        models = {
            "torch": embeddings.LocalEmbedder(),
            "onnx fp32": embeddings.OnnxEmbedder(Path(scratch), quantized=False),
            "onnx int8": embeddings.OnnxEmbedder(Path(settings.SENTINEL["STATIC_EMBEDDINGS_DIR"])),
        }
        vectors: dict[str, np.ndarray] = {}
        out: dict[str, dict[str, float]] = {}
        for label, model in models.items():
            model._encode(["warm up"])
            one = iter(corpus)
            singles = _cpu_ms(lambda: model._encode([next(one)]), 1, n)  # noqa: B023 - called before the loop moves on
            batches = iter(corpus[lo : lo + 32] for lo in range(0, n - 31, 32))
            batched = _cpu_ms(lambda: model._encode(next(batches)), 32, n // 32)  # noqa: B023
            vectors[label] = np.asarray(model._encode(corpus), dtype=np.float32)
            out[label] = {"one_p50_ms": statistics.median(singles), "one_mean_ms": statistics.mean(singles)}
            out[label]["batch_ms"] = statistics.mean(batched)
    reference = vectors["torch"]
    neighbours = _nearest(reference)
    for label, found in vectors.items():
        cosines = (found * reference).sum(axis=1)
        out[label].update(
            cos_mean=float(cosines.mean()),
            cos_min=float(cosines.min()),
            cos_p1=float(np.percentile(cosines, 1)),
            same_neighbour=float((_nearest(found) == neighbours).mean()),
            texts=n,
            norm_error=float(np.abs(np.linalg.norm(found, axis=1) - 1).max()),
        )
    return out


def _nearest(vectors: np.ndarray) -> np.ndarray:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -2)
    return similarity.argmax(axis=1)


def report(result: Result) -> list[str]:
    def pct(xs):
        return f"{100 * sum(xs) / len(xs):.0f}%" if xs else "n/a"

    history = statistics.mean(result.history_tokens)
    lines = [
        "## Memory (issue 3)",
        "",
        f"{result.conversations} generated multi-session conversations of {result.messages // result.conversations} messages "
        f"(mean full history {history:,.0f} tokens), 5 facts planted in the first fifth of each among same-topic "
        "distractors, each asked at the end. Context budget 2,048 tokens; recent window 12 messages; recall 8. "
        f"Embeddings {result.model} (SENTINEL_EMBEDDINGS={settings.SENTINEL['EMBEDDINGS']}); "
        "tokens counted with SmolLM2's tokenizer; consolidation by the "
        "local SmolLM2-135M through llama.cpp.",
        "",
        "| measure | result | target |",
        "| --- | --- | --- |",
    ]
    for mode, label in (("recall", "window + recall (no consolidation)"), ("consolidated", "after consolidation")):
        tokens_ = result.context_tokens[mode]
        if not tokens_:
            continue
        mean = statistics.mean(tokens_)
        lines.append(
            f"| context size, {label} | {mean:,.0f} tokens, {100 * (1 - mean / history):.1f}% smaller than the history "
            f"| at least 80% smaller (aim 90%) |"
        )
        lines.append(
            f"| planted fact in the context, {label} | {pct(result.found[mode])} of {len(result.found[mode])} questions | at least 90% |"
        )
    if result.consolidation:
        msgs = sum(m for m, _ in result.consolidation)
        secs = sum(s for _, s in result.consolidation)
        lines.append(
            f"| consolidation time per 100 messages (local SmolLM2-135M, 2 CPU cores) | {100 * secs / msgs:.1f} s "
            f"({msgs} messages in {secs:.0f} s) | seed: 100 messages within 30 s |"
        )
    lines.append(
        f"| indexing (token count + embedding) | {1000 * result.index_seconds / result.messages:.2f} ms per message "
        f"({result.messages:,} messages in {result.index_seconds:.1f} s) | in the background |"
    )
    for mode, label in (("exact", "exact scan (used up to SENTINEL_EXACT_SEARCH_MAX scoped memories)"), ("hnsw", "HNSW index")):
        ms = sorted(result.search_ms.get(mode, [0.0]))
        lines.append(
            f"| memory search over {result.memories:,} memories, {label}, with query embedding, in process | "
            f"p50 {statistics.median(ms):.1f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms | |"
        )
    lines.append(f"| HNSW recall@10 against the exact scan (ef_search 200), by memory id | {result.hnsw_recall:.2f} | |")
    lines += [
        "",
        "The generated history repeats many texts word for word (as chat does: greetings, stock phrases); identical "
        "vectors tie, so recall counted by memory id is a lower bound. It is also why Sentinel scans scoped sets of up "
        "to `SENTINEL_EXACT_SEARCH_MAX` memories exactly: the first run of this benchmark, searching through HNSW at "
        "pgvector's default ef_search 40, found the planted fact for only 38% of the 40 questions (commit df3c093).",
    ]
    lines.append("")
    return lines + embeddings_report(result)


EMBEDDINGS_HEADING = "## Embeddings (issue 13)"


def embeddings_report(result: Result) -> list[str]:
    """Each embedding model's cost per message and the memory benchmark's planted facts with it."""
    if not result.embedding_costs:
        return []
    lines = [
        EMBEDDINGS_HEADING,
        "",
        "Each model in the benchmark process, on texts none of which was embedded before (no cache answers): CPU time of the "
        "whole process per message (process_time, so the local model's own thread counts), one text per call as a turn's "
        "recall query is, and in batches of 32 as the indexer sends them; `embed_query()` adds the embedding cache (a read "
        "and a write per call) for the models that use it. Then every memory of the run re-embedded with the model "
        "(`indexing.reembed_stale`, what follows a change of SENTINEL_EMBEDDINGS) and the memory benchmark's questions asked "
        "again (window + recall, before consolidation). A turn embeds one query and indexes about two messages. "
        "The issue's budget is 1.5 ms of Sentinel CPU for the whole turn. Shared 2-core machine: indicative figures.",
        "",
        "| model | load | one message (query), CPU p50 / mean | batch of 32 (indexing), CPU per message "
        "| embed_query() with its cache, CPU | "
        "per turn (query + 2 indexed) | re-embedding, wall per memory | planted fact in the context | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, c in result.embedding_costs.items():
        per_turn = c["embed_ms"] + 2 * c["batch_ms"]
        lines.append(
            f"| {EMBEDDING_KINDS[kind]} | {c['load_s']:.1f} s | {c['one_p50_ms']:.3f} / {c['one_mean_ms']:.3f} ms | "
            f"{c['batch_ms']:.3f} ms | {c['embed_ms']:.3f} ms | {per_turn:.2f} ms | {c['reembed_ms']:.2f} ms | "
            f"{100 * c['found']:.0f}% of {c['questions']:.0f} | at least 90% |"
        )
    if result.agreement:
        n = next(iter(result.agreement.values()))["texts"]
        lines += [
            "",
            f"all-MiniLM-L6-v2 through three runtimes on the same {n:.0f} distinct texts (half chat lines, half run-tagged random "
            "words as `bench/texts.py` makes them), each called on the benchmark's thread with one thread of its own runtime "
            "(torch's intra-op threads, ONNX Runtime's intra_op_num_threads): CPU per message (process_time), and agreement with "
            "torch's vectors: cosine per text, and how often a text's nearest other text is the one torch finds.",
            "",
            "| runtime | one message, CPU p50 / mean | batch of 32, CPU per message | cosine with torch, mean / 1st percentile / min "
            "| same nearest text as torch |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, a in result.agreement.items():
            lines.append(
                f"| {label} | {a['one_p50_ms']:.2f} / {a['one_mean_ms']:.2f} ms | {a['batch_ms']:.2f} ms | "
                f"{a['cos_mean']:.4f} / {a['cos_p1']:.4f} / {a['cos_min']:.4f} | {100 * a['same_neighbour']:.0f}% |"
            )
    lines += [
        "",
        "A turn of an agent with no long-term memories (`Agent.has_memories` false: recall skipped) against the same "
        "turn with recall run anyway, which finds nothing: context assembly's statements and CPU (p50 of 60, a new "
        "query each time).",
        "",
        "| model | recall skipped | recall run |",
        "| --- | --- | --- |",
    ]
    for kind, c in result.embedding_costs.items():
        lines.append(
            f"| {EMBEDDING_KINDS[kind]} | {c['assemble_sql_False']:.0f} statements, {c['assemble_ms_False']:.2f} ms | "
            f"{c['assemble_sql_True']:.0f} statements, {c['assemble_ms_True']:.2f} ms |"
        )
    lines.append("")
    return lines
