"""Context assembly: what one turn sends to the model, within the agent's token budget.

    system prompt                                   always
    + the recent window (newest messages verbatim)  short_term_messages / short_term_tokens; the
                                                    turn's own input is always sent whole
    + summaries of this conversation                newest first, up to half of what is left
    + shared memory (memory/shared.py)              a conversation in a memory scope (a step of a
                                                    shared_memory run): what the scope's other
                                                    conversations were given and said, nearest to
                                                    the query first, up to 3/4 of what is left
    + recalled memories                             nearest to the query (the new message and the
                                                    last reply) among this agent's messages and
                                                    summaries, up to recall_limit, filling the rest

No piece appears twice: recall skips what the window or the summaries already carry. Every piece
keeps its source message ids, so any turn's context can be explained and replayed.

The turn's own input is never trimmed: with the system prompt it must fit the budget, and everything
else (the older window, summaries, recall) shares what is left. Admission refuses an input that cannot
fit (`check_input_fits`, before anything is written); `assemble` raises the same error if the budget
shrank after admission, rather than send the turn without its input.

A live turn reads its conversation (window, totals, summaries) in one hand-written statement
(memory/context_reads.py, SENTINEL_CONTEXT_READS=sql); a replayed turn reads the store as it was
through the ORM (`_OrmReads`, also SENTINEL_CONTEXT_READS=orm), the reference the other is tested against.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, Sum

from agents.forking import ancestors
from agents.models import Message
from memory import context_reads, shared, tokens
from memory import search as memory_search
from memory.asof import AsOf
from memory.models import Summary

# Below this cosine similarity a meaning-only match is noise for all-MiniLM-L6-v2. It was 0.2: on
# the dialogue benchmark (issue 16) that floor dropped the evidence of "when did ..." questions, whose
# wording sits far from any statement (82% found; 92% at 0.1), while a word match needs no floor.
MIN_RECALL_SCORE = 0.1
SUMMARY_SHARE = 0.5
SHARED_SHARE = 0.75


class ContextLengthExceeded(Exception):
    """The turn's own input, with the agent's system prompt, is larger than the agent's context budget.

    Worded like OpenAI's error of the same code, so clients that handle one handle the other (its
    status and code: sentinel_site/errors.py).
    """

    def __init__(self, budget: int, size: int) -> None:
        self.message = (
            f"This agent's context budget is {budget} tokens. However, your messages resulted in {size} tokens "
            "(with the agent's system prompt). Please reduce the length of the messages."
        )
        super().__init__(self.message)
        self.budget = budget
        self.size = size


@lru_cache(maxsize=1024)
def system_tokens(system_prompt: str) -> int:
    """Tokens of a system prompt as one message (cached: every turn of an agent sends the same one)."""
    return tokens.count(system_prompt) + tokens.MESSAGE_OVERHEAD if system_prompt else 0


@lru_cache(maxsize=8192)
def _cached_line_tokens(text: str) -> int:
    return tokens.count(text) + 1


def _line_tokens(text: str) -> int:
    """Tokens of a recalled or shared line (and its newline). Cached: the same memories come back
    turn after turn, and recall counts each candidate it weighs (two dozen a turn)."""
    return _cached_line_tokens(text) if len(text) <= LINE_CACHE_MAX_CHARS else tokens.count(text) + 1


LINE_CACHE_MAX_CHARS = 4000  # longer lines are counted every time: the cache stays under ~32 MB


def _byte_bound(message: dict) -> int:
    """An upper bound of count_message() without the tokenizer: every token covers at least one byte."""
    size = len((message.get("content") or "").encode("utf-8", "replace"))
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        size += len((function.get("name", "") + function.get("arguments", "")).encode("utf-8", "replace"))
    return size + tokens.MESSAGE_OVERHEAD


def check_input_fits(agent, messages: list[dict]) -> None:
    """Refuse (ContextLengthExceeded) a turn whose input cannot be sent whole within the budget.

    Cheap on the admission path: a byte count bounds the token count, so the tokenizer runs only
    for inputs within reach of the budget (about 50 µs a message when it does).
    """
    budget = agent.context_budget
    system = system_tokens(agent.system_prompt)
    if system + sum(_byte_bound(message) for message in messages) <= budget:
        return
    size = system + sum(tokens.count_message(message) for message in messages)
    if size > budget:
        raise ContextLengthExceeded(budget, size)


@dataclass
class Piece:
    kind: str  # system | summary | shared | recalled | recent
    text: str
    tokens: int
    source_message_ids: list[str] = field(default_factory=list)
    client_ids: list[str] = field(default_factory=list)
    summary_id: str | None = None
    memory_id: str | None = None
    score: float | None = None
    agent: str | None = None  # shared pieces: whose memory it is
    message: dict | None = None  # recent pieces: the message as sent
    date: str | None = None  # when it was said (summaries: the span's last day)
    why: dict | None = None  # recalled pieces: ranks per retriever, fused rank (memory/search.py FusedHit)

    def explain(self) -> dict:
        """The piece without its text, for the turn's event log: its fields as they are (dataclasses'
        asdict copied every nested value deeply, 2.5% of a loaded worker; nothing changes a piece
        once assembly has built it)."""
        return {name: value for name in _EXPLAINED if (value := getattr(self, name)) not in (None, [])}


_EXPLAINED = tuple(f.name for f in fields(Piece) if f.name not in ("text", "message"))


@dataclass
class Context:
    pieces: list[Piece]
    messages: list[dict]
    total_tokens: int
    history_tokens: int  # every message so far, verbatim: what a memoryless server would send
    unconsolidated_tokens: int
    query: str = ""
    next_index: int = 0  # where the turn's reply goes among its messages (after its own input)

    def explain(self) -> dict:
        return {
            "pieces": [piece.explain() for piece in self.pieces],
            "total_tokens": self.total_tokens,
            "history_tokens": self.history_tokens,
            "unconsolidated_tokens": self.unconsolidated_tokens,
            "tokenizer": tokens.tokenizer_name(),
        }


EmbedTexts = Callable[[list[str]], list[list[float]]]
NEW_MESSAGE_WEIGHT = 0.8  # the recall query leans on the new message; the last reply adds context


def assemble(
    conversation, *, upto_seq: int | None = None, query: str | None = None, embed: EmbedTexts | None = None, as_of: AsOf | None = None
) -> Context:
    """The context for the conversation's turn number `upto_seq` (None: the next turn): the system
    prompt, then the recent window, summaries and recall, each within what the pieces before it left.
    `as_of`: the store as it was when that turn ran (a replay, agents/replay.py; memory/asof.py)."""
    agent = conversation.agent
    reads = _reads(conversation, upto_seq, as_of)
    system = system_tokens(agent.system_prompt)
    remaining = agent.context_budget - system
    loaded = reads.recent()
    _, own_input, window = _window(agent, loaded, upto_seq, remaining, system)
    remaining -= sum(cost for _, cost in window)
    totals = reads.totals(loaded)
    # No message consolidated yet: no summary can exist (each covers messages it is linked to).
    summaries = _summaries(reads.summaries(), int(remaining * SUMMARY_SHARE)) if totals.consolidated or as_of is not None else []
    remaining -= sum(piece.tokens for piece in summaries)
    texts = [query] if query is not None else _default_query([message for message, _ in window])
    vector = _QueryVector(texts, embed, speakers=frozenset(message.name for message, _ in window if message.name))
    scope = shared.scope_of(conversation)
    shared_pieces = _shared(conversation, scope, vector, window, int(remaining * SHARED_SHARE), as_of) if scope else []
    remaining -= sum(piece.tokens for piece in shared_pieces)
    recalled, unattached_from = _recall(conversation, texts, window, [*summaries, *shared_pieces], remaining, vector, as_of)

    pieces = [Piece(kind="system", text=agent.system_prompt, tokens=system)] if agent.system_prompt else []
    pieces += [*summaries, *shared_pieces, *recalled]
    pieces += [
        Piece(
            kind="recent",
            text=message.content,
            tokens=cost,
            source_message_ids=[str(message.id)],
            client_ids=[message.client_id] if message.client_id else [],
            message=message.as_openai(),
        )
        for message, cost in window
    ]
    # Shared pieces are other conversations' (and so are recalled ones of other conversations).
    # unattached_from: the conversations of recalled pieces whose client ids the search did not bring
    reads.attach_client_ids(pieces, elsewhere=bool(shared_pieces) or bool(unattached_from - {conversation.id}))
    return Context(
        pieces=pieces,
        messages=_render(agent.system_prompt, summaries, shared_pieces, recalled, window),
        total_tokens=sum(piece.tokens for piece in pieces),
        history_tokens=system + totals.all,
        unconsolidated_tokens=system + totals.unconsolidated,
        query="\n".join(texts),
        next_index=max((message.index for message in own_input), default=-1) + 1,
    )


def _reads(conversation, upto_seq: int | None, as_of: AsOf | None) -> _OrmReads | _SqlReads:
    """The lane assembly reads the store through: hand-written SQL for a live turn
    (SENTINEL_CONTEXT_READS=sql, the default), the ORM for a replay (`as_of`) or when so configured."""
    if as_of is None and settings.SENTINEL["CONTEXT_READS"] == "sql":
        return _SqlReads(conversation, upto_seq)
    return _OrmReads(conversation, upto_seq, as_of)


class _OrmReads:
    """The conversation's messages, totals, summaries and client ids through the ORM: the reference
    lane (a replay reads the store as it was through `as_of`), a statement each."""

    def __init__(self, conversation, upto_seq: int | None, as_of: AsOf | None) -> None:
        self.conversation, self.upto_seq, self.as_of = conversation, upto_seq, as_of
        history = Message.objects.filter(conversation=conversation)
        if as_of is not None:
            history = as_of.messages(history)
        if upto_seq is not None:
            history = history.filter(seq__lte=upto_seq)
        self.history = history

    def recent(self) -> list:
        """The turn's own input and the newest short_term_messages before it, newest first, in one round trip."""
        history, upto_seq = self.history, self.upto_seq
        recent = history.order_by("-seq", "-index")
        if upto_seq is not None:
            recent = history.filter(seq=upto_seq).union(
                recent.exclude(seq=upto_seq)[: self.conversation.agent.short_term_messages], all=True
            )
        else:
            recent = recent[: self.conversation.agent.short_term_messages]
        return sorted(recent, key=lambda message: (-message.seq, -message.index))

    def totals(self, loaded: list) -> _Totals:
        """Messages the indexer has not counted yet are counted here; they are usually the newest,
        loaded already, and only when some are not is another query needed."""
        unconsolidated = Q(summary__isnull=True) if self.as_of is None else self.as_of.unconsolidated()
        totals = self.history.aggregate(
            all=Sum("token_count"),
            unconsolidated=Sum("token_count", filter=unconsolidated),
            uncounted=Count("id", filter=Q(token_count__isnull=True)),
            consolidated=Count("id", filter=~unconsolidated),
        )
        uncounted = [m for m in loaded if m.token_count is None]
        if len(uncounted) != totals["uncounted"]:
            uncounted = list(self.history.filter(token_count__isnull=True))
        return _totals(totals["all"] or 0, totals["unconsolidated"] or 0, totals["consolidated"], uncounted)

    def summaries(self) -> list:
        """The conversation's newest summaries (as of the replayed turn), newest first."""
        found = Summary.objects.filter(conversation=self.conversation)
        if self.as_of is not None:
            found = self.as_of.summaries(found)
        return list(found.order_by(*SUMMARY_ORDER)[:SUMMARIES_READ])

    def attach_client_ids(self, pieces: list[Piece], *, elsewhere: bool) -> None:
        _attach_client_ids(pieces, _orm_client_ids)


class _SqlReads:
    """The same reads for a live turn in hand-written SQL (memory/context_reads.py): the window, the
    totals and the summaries in one statement; client ids only when a piece could carry one."""

    def __init__(self, conversation, upto_seq: int | None) -> None:
        self.conversation, self.upto_seq = conversation, upto_seq
        self.read: context_reads.HistoryRead | None = None

    def recent(self) -> list:
        self.read = context_reads.read_history(self.conversation.id, self.upto_seq, self.conversation.agent.short_term_messages)
        return sorted(self.read.recent, key=lambda message: (-message.seq, -message.index))

    def totals(self, loaded: list) -> _Totals:
        read = self.read
        assert read is not None, "recent() reads the totals too"
        uncounted = [m for m in loaded if m.token_count is None] + read.uncounted
        return _totals(read.all_tokens, read.unconsolidated_tokens, read.consolidated_count, uncounted)

    def summaries(self) -> list:
        assert self.read is not None, "recent() reads the summaries too"
        return self.read.summaries

    def attach_client_ids(self, pieces: list[Piece], *, elsewhere: bool) -> None:
        """`elsewhere`: some piece comes from another conversation, whose client ids the read did not look at."""
        assert self.read is not None
        if elsewhere or self.read.has_client_ids:
            _attach_client_ids(pieces, context_reads.client_ids)


def _window(agent, loaded: list, upto_seq: int | None, remaining: int, system: int) -> tuple[list, list, list[tuple[Any, int]]]:
    """(the messages loaded, the turn's own input, the window as (message, tokens) oldest first) of
    the messages loaded newest first (the turn's input, then the newest before it).

    The newest messages verbatim, within short_term_messages / short_term_tokens. A turn's own input
    is always sent whole (for "the next turn", upto_seq None, there is none yet). ContextLengthExceeded
    if the input alone no longer fits (the budget shrank)."""
    own_input = [message for message in loaded if message.seq == upto_seq]
    window = [(message, _cost(message)) for message in _required(loaded, len(own_input))]
    window_tokens = sum(cost for _, cost in window)
    if window_tokens > remaining:
        raise ContextLengthExceeded(agent.context_budget, system + window_tokens)  # the budget shrank since admission
    required = len(window)
    for message in loaded[required:]:
        cost = _cost(message)
        fits_window = len(window) < agent.short_term_messages and window_tokens + cost <= agent.short_term_tokens
        if not fits_window or window_tokens + cost > remaining:
            break
        window.append((message, cost))
        window_tokens += cost
    window.reverse()
    while len(window) > required and window[0][0].role == "tool":  # a tool result without the call that asked for it
        window.pop(0)
    return loaded, own_input, window


SUMMARIES_READ = context_reads.SUMMARIES_READ
SUMMARY_ORDER = ("-last_seq", "-created_at", "-id")  # newest first; spans within one seq (an import) by when written


def _summaries(found: list, share: int) -> list[Piece]:
    """Of the conversation's summaries (newest first), the newest within their share of the budget; shown oldest first."""
    pieces: list[Piece] = []
    for summary in found:
        cost = summary.token_count + tokens.MESSAGE_OVERHEAD + (SPAN_DATE_TOKENS if summary.first_at else 0)
        if cost > share:
            break
        share -= cost
        pieces.append(
            Piece(
                kind="summary",
                text=_dated_summary(summary),
                tokens=cost,
                summary_id=str(summary.id),
                source_message_ids=[str(mid) for mid in summary.source_message_ids],
                date=summary.last_at.date().isoformat() if summary.last_at else None,
            )
        )
    pieces.reverse()
    return pieces


SPAN_DATE_TOKENS = 24  # "[2026-03-04 to 2026-03-09] ": digits tokenize one by one (an upper bound)


def _dated_summary(summary) -> str:
    """The summary under the dates of the span it covers."""
    if not (summary.first_at and summary.last_at):
        return summary.text
    first, last = summary.first_at.date(), summary.last_at.date()
    span = f"{first:%Y-%m-%d}" if first == last else f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
    return f"[{span}] {summary.text}"


class _QueryVector:
    """The recall query's vector, embedded when first asked for (recall and shared memory both may).

    The names of the conversation's speakers are left out of what is embedded (`without_names`); the
    words searched by full text keep them."""

    def __init__(self, texts: list[str], embed: EmbedTexts | None, speakers: frozenset[str] = frozenset()) -> None:
        self.texts, self.embed, self.speakers = texts, embed, speakers
        self._done = False
        self._vector: list[float] | None = None

    @property
    def possible(self) -> bool:
        return self.embed is not None and bool("".join(self.texts))

    def get(self) -> list[float] | None:
        if not self._done and self.possible:
            assert self.embed is not None
            self._vector = query_vector([without_names(text, self.speakers) for text in self.texts], self.embed)
        self._done = True
        return self._vector

    def clause_vectors(self) -> list[list[float]]:
        """A vector per clause of a two-part question ("which X ..., and which Y ..."), so each
        part's evidence is searched for on its own; none for a simple one (no extra embedding)."""
        parts = clauses(self.texts[0]) if self.texts and self.embed is not None else []
        if not parts:
            return []
        assert self.embed is not None
        vectors = self.embed([without_names(part, self.speakers) for part in parts])
        return vectors if len(vectors) == len(parts) else []


def without_names(text: str, names: frozenset[str]) -> str:
    """`text` without the speakers' names ("What does Jonas see from home?" -> "What does see from
    home?"), for the query's embedding. A message is stored and embedded as what was said, not who
    said it (its speaker's name is a field beside it), so a speaker's name in the query matches
    nothing the speaker said and only pulls the query's vector away from it: on the dialogue
    benchmark (issue 16) the evidence of "What are Jonas's two hobbies?" ranked 150th and 183rd
    among 1,008 messages with the name in the query. Unchanged when nothing would be left."""
    if not names:
        return text
    pattern = _names_pattern(names)
    stripped = " ".join(pattern.sub(" ", text).split())
    return stripped if stripped.strip(" ?.!,") else text


@lru_cache(maxsize=1024)
def _names_pattern(names: frozenset[str]) -> re.Pattern:
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?:['’]s)?(?!\w)", re.IGNORECASE)


_CLAUSE_SPLIT = re.compile(r"\s*(?:,\s*and\s+|;\s*|,\s+|\s+and\s+|\?\s+)", re.IGNORECASE)
CLAUSE_MIN_WORDS = 3
# "and" between two capitalised words joins names ("Mara and Jonas", "Bergen and Oslo"), not clauses:
# split there, "What endurance events have Mara and Jonas done or planned?" gave "...have Mara" and
# "Jonas done or planned", two more embeddings on the turn's path, the second (names left out,
# "done or planned") near nothing the question is about.
_JOINED_NAMES = re.compile(r"\b([A-Z][\w'’]*) and (?=[A-Z])")
_JOINED = "\uff06"  # a stand-in for that "and" while the question is split: no split pattern takes it


def clauses(text: str) -> list[str]:
    """The parts of a question joined by "and", commas or semicolons, each of three words or more;
    [] when it has fewer than two such parts, is no question (every extra part is an embedding on
    the turn's path: statements don't pay it) or is long (a paragraph is not a question)."""
    if len(text) > 300 or "?" not in text:
        return []
    protected = _JOINED_NAMES.sub(rf"\1 {_JOINED} ", text)
    parts = [part.replace(_JOINED, "and").strip(" ?.!") for part in _CLAUSE_SPLIT.split(protected)]
    parts = [part for part in parts if len(part.split()) >= CLAUSE_MIN_WORDS]
    return parts[:3] if len(parts) >= 2 else []


def _shared(conversation, scope: str, vector: _QueryVector, window, share: int, as_of: AsOf | None = None) -> list[Piece]:
    """The scope's memories from its other conversations, nearest to the query first (newest first
    when there is no query), none the window carries; shown oldest first."""
    if share <= 0:
        return []
    hits = shared.recall(conversation.tenant_id, scope, vector=vector.get(), exclude_conversation_id=conversation.id, as_of=as_of)
    seen_texts = {message.content for message, _ in window}
    chosen: list[tuple[tuple[datetime, datetime], Piece]] = []
    for hit in hits:
        memory = hit.memory
        if memory.text in seen_texts:  # the turn was given it already (a pipeline's previous answer)
            continue
        seen_texts.add(memory.text)
        text = f"[{memory.agent.name}, {memory.role}] {memory.text}"
        cost = _line_tokens(text)
        if cost > share:
            continue
        share -= cost
        piece = Piece(
            kind="shared",
            text=text,
            tokens=cost,
            memory_id=str(memory.id),
            score=hit.score,
            agent=memory.agent.name,
            source_message_ids=[str(mid) for mid in memory.source_message_ids],
        )
        chosen.append(((memory.occurred_at, memory.created_at), piece))
    chosen.sort(key=lambda pair: pair[0])
    return [piece for _, piece in chosen]


def _recall(
    conversation, texts: list[str], window, included: list[Piece], remaining: int, vector: _QueryVector, as_of: AsOf | None = None
) -> tuple[list[Piece], set]:
    """The agent's memories that best match what is being asked (hybrid search: meaning and words,
    fused), none the window, the summaries or the shared memory carry; then, while the budget
    allows, the messages next to those hits; with the conversations those memories belong to. A
    fork (agents/forking.py) holds its own copies of what it shares with the conversations it was
    forked from: theirs are left out, so it never recalls what was said there after the fork point."""
    agent = conversation.agent
    # An agent with nothing in long-term memory (Agent.has_memories, read with the agent) costs
    # neither a query embedding nor a search.
    if not vector.possible or not agent.has_memories or remaining <= 0 or not agent.recall_limit:
        return [], set()
    query = vector.get()
    if query is None:
        return [], set()
    hits = memory_search.hybrid(
        conversation.tenant_id,
        query,
        texts[0],  # words: the new message only (the reply before it would match everything it said)
        k=agent.recall_limit * 2,
        extra_vectors=vector.clause_vectors(),
        agent_id=agent.id,
        exclude_message_ids=[m.id for m, _ in window],
        exclude_memory_ids=[piece.memory_id for piece in included if piece.memory_id],
        exclude_conversation_ids=ancestors(conversation),
        as_of=as_of,
    )
    chooser = _Chooser(remaining, {piece.summary_id for piece in included if piece.summary_id}, {m.content for m, _ in window})
    updates: dict[str, list] = {}
    for hit in hits:
        if hit.via == "update" and hit.of:
            updates.setdefault(hit.of, []).append(hit)
    chosen_hits: set[str] = set()

    def choose(hit: memory_search.FusedHit) -> bool:
        if len(chosen_hits) >= agent.recall_limit or not chooser.take(hit):
            return False
        chosen_hits.add(str(hit.memory.id))
        for update in updates.get(str(hit.memory.id), []):
            chooser.take(update)  # the later fact that replaces a hit: never the old value alone
        return True

    patterns = _Patterns()
    waiting = []
    for hit in hits:
        if hit.via != "" or not _relevant(hit):
            continue
        if patterns.repeated(hit.memory.text):
            waiting.append(hit)  # a third line of a pattern two chosen lines follow: after every other candidate
        elif choose(hit):
            patterns.add(hit.memory.text)
    for hit in waiting:
        choose(hit)
    for hit in hits:  # then, with what is left, the turns around the hits
        if hit.via == "neighbour" and hit.of in chosen_hits:
            chooser.take(hit)
    return sorted(chooser.pieces, key=lambda piece: piece.text), chooser.unattached_from  # dated lines: chronological


# Two lines follow one pattern when they share at least PATTERN_SHARE of the word pairs of the
# shorter (and two or more): "Work was hectic, lots of meetings about rent prices." and "Work was
# fine, lots of meetings about the bridge repairs." do (4 of 9); a fact and the later one that
# changes it rarely do ("My sister Ingrid just moved to Trondheim for her PhD." and "Ingrid finished
# her PhD and moved back to Oslo." share 1), and when they do they are two lines, not three.
PATTERN_SHARE = 0.4
PATTERN_REPEATS = 2


class _Patterns:
    """The word pairs of the recalled lines chosen so far. A candidate that follows the pattern of
    PATTERN_REPEATS of them waits until every other candidate has had its turn: chat repeats its
    small talk with a word changed, and on the dialogue benchmark (issue 16) variants of "Work was X,
    lots of meetings about Y." took 25 of the 48 recalled lines a question about home projects was
    given, pushing its evidence to the 52nd. Embeddings cannot tell the two cases apart (a fact and its
    update are as close as two variants of small talk: cosine 0.5-0.75 both); word pairs can."""

    def __init__(self) -> None:
        self.chosen: list[frozenset] = []

    def add(self, text: str) -> None:
        self.chosen.append(_word_pairs(text))

    def repeated(self, text: str) -> bool:
        mine = _word_pairs(text)
        if len(mine) < 2:
            return False
        alike = 0
        for other in self.chosen:
            shared = len(mine & other)
            if shared >= 2 and shared >= PATTERN_SHARE * min(len(mine), len(other)):
                alike += 1
                if alike >= PATTERN_REPEATS:
                    return True
        return False


_WORDS = re.compile(r"[\w']+")


@lru_cache(maxsize=8192)
def _word_pairs(text: str) -> frozenset:
    words = _WORDS.findall(text[:LINE_CACHE_MAX_CHARS].lower())
    return frozenset(itertools.pairwise(words))


def _relevant(hit: memory_search.FusedHit) -> bool:
    """A word match is evidence; a meaning-only match must be close enough not to be noise."""
    return hit.text_rank is not None or (hit.similarity or 0.0) >= MIN_RECALL_SCORE


class _Chooser:
    """Recalled pieces within a token budget, none twice (same memory, summary or words)."""

    def __init__(self, remaining: int, summary_ids: set, seen_texts: set) -> None:
        self.remaining, self.summary_ids, self.seen_texts = remaining, summary_ids, set(seen_texts)
        self.memory_ids: set[str] = set()
        self.unattached_from: set = set()  # conversations of the pieces whose client ids the search did not bring (the ORM lane's)
        self.pieces: list[Piece] = []

    def take(self, hit: memory_search.FusedHit) -> bool:
        memory = hit.memory
        if str(memory.id) in self.memory_ids or memory.text in self.seen_texts:
            return False
        if memory.summary_id is not None and str(memory.summary_id) in self.summary_ids:
            return False
        text = _recalled_line(memory)
        cost = _line_tokens(text)
        if cost > self.remaining:
            return False
        self.remaining -= cost
        self.memory_ids.add(str(memory.id))
        client_ids = getattr(memory, "client_ids", None)  # a FoundMemory's (SENTINEL_SEARCH_READS=sql)
        if client_ids is None:
            self.unattached_from.add(memory.conversation_id)
        self.seen_texts.add(memory.text)
        self.pieces.append(
            Piece(
                kind="recalled",
                text=text,
                tokens=cost,
                memory_id=str(memory.id),
                score=round(hit.similarity, 4) if hit.similarity is not None else None,
                source_message_ids=[str(mid) for mid in memory.source_message_ids],
                client_ids=list(client_ids or ()),
                date=memory.occurred_at.date().isoformat(),
                why=_why(hit),
            )
        )
        return True


def _why(hit: memory_search.FusedHit) -> dict:
    why = {
        "fused_rank": hit.fused_rank,
        "fused_score": round(hit.fused, 5),
        "vector_rank": hit.vector_rank,
        "similarity": None if hit.similarity is None else round(hit.similarity, 4),
        "text_rank": hit.text_rank,
        "text_score": None if hit.text_score is None else round(hit.text_score, 4),
        "via": hit.via or "hit",
        "of": hit.of,
        "supersedes": str(hit.memory.supersedes_id) if hit.memory.supersedes_id else None,
    }
    return {key: value for key, value in why.items() if value is not None}


@dataclass(frozen=True)
class _Totals:
    all: int  # tokens of every message so far (without the system prompt)
    unconsolidated: int  # of those not consolidated yet
    consolidated: int  # how many messages a summary covers


def _totals(all_tokens: int, unconsolidated_tokens: int, consolidated: int, uncounted_messages: list) -> _Totals:
    """The history's totals from the counted tokens and the messages the indexer has not counted yet."""
    uncounted = [(tokens.count_message(m.as_openai()), m.summary_id is None) for m in uncounted_messages]
    return _Totals(
        all=all_tokens + sum(count for count, _ in uncounted),
        unconsolidated=unconsolidated_tokens + sum(count for count, fresh in uncounted if fresh),
        consolidated=consolidated,
    )


def _cost(message) -> int:
    return message.token_count if message.token_count is not None else tokens.count_message(message.as_openai())


def _required(loaded: list, own: int) -> list:
    """What must be sent, newest first: the turn's own input and, when that opens with tool results,
    the assistant message whose tool calls they answer (a tool result alone is refused by providers)."""
    required = loaded[:own]
    if required and required[-1].role == "tool":
        for message in loaded[own:]:
            required.append(message)
            if message.role != "tool":
                break
        if required[-1].role != "assistant" or not required[-1].tool_calls:
            required = loaded[:own]  # the call is not in reach: send the input as it came
    return required


def recall_query(conversation) -> list[str]:
    """The texts recall would embed for the conversation's next turn."""
    recent = Message.objects.filter(conversation=conversation).order_by("-seq", "-index")[: conversation.agent.short_term_messages]
    return _default_query(list(reversed(list(recent))))


def query_vector(texts: list[str], embed: EmbedTexts) -> list[float] | None:
    """One vector for recall: the new message, nudged toward the reply before it."""
    vectors = embed(texts)
    if not vectors:
        return None
    if len(vectors) == 1:
        return vectors[0]
    combined = [NEW_MESSAGE_WEIGHT * a + (1 - NEW_MESSAGE_WEIGHT) * b for a, b in zip(vectors[0], vectors[1], strict=True)]
    norm = sum(x * x for x in combined) ** 0.5 or 1.0
    return [x / norm for x in combined]


def _default_query(window) -> list[str]:
    """[the newest user message, the reply before it]: what the turn is about, and its context."""
    parts: list[str] = []
    for message in reversed(window):
        if message.role == "user" and not parts and message.content:
            parts.append(message.content)
        elif message.role == "assistant" and parts and message.content:
            parts.append(message.content)
            break
    return parts


RECALL_HINT_MAX_CHARS = 4000  # longer texts are not sent through the broker; the worker embeds them as before


def recall_hint(messages: list[dict]) -> str | None:
    """The text a turn with these input messages will recall by (the newest user message, as
    `_default_query` picks it), for the worker to start embedding early; None if there is none."""
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and content:
            return content if len(content) <= RECALL_HINT_MAX_CHARS else None
    return None


def _recalled_line(memory) -> str:
    """`[2026-03-04, user] text`: the date it was said, so "when did ..." can be answered."""
    when = memory.occurred_at.strftime("%Y-%m-%d")
    who = memory.kind if memory.kind in ("summary", "fact") else memory.role
    if memory.supersedes_id:
        who += ", replaces an earlier fact"
    return f"[{when}, {who}] {memory.text}"


def _render(system_prompt: str, summaries: list[Piece], shared_pieces: list[Piece], recalled: list[Piece], window) -> list[dict]:
    sections = [system_prompt] if system_prompt else []
    if summaries:
        sections.append("Summary of the earlier conversation:\n" + "\n\n".join(piece.text for piece in summaries))
    if shared_pieces:
        sections.append(
            "Shared with the other agents working on this (what they were given and said):\n"
            + "\n".join(f"- {piece.text}" for piece in shared_pieces)
        )
    if recalled:
        sections.append("Things remembered from earlier (may be relevant):\n" + "\n".join(f"- {piece.text}" for piece in recalled))
    messages = [{"role": "system", "content": "\n\n".join(sections)}] if sections else []
    messages.extend(message.as_openai() for message, _ in window)
    return messages


def _attach_client_ids(pieces: list[Piece], client_ids_of: Callable[[list[uuid.UUID]], dict]) -> None:
    """Give summary and recalled pieces the importer's ids of their source messages."""
    wanted = {mid for piece in pieces if piece.kind in ("summary", "shared", "recalled") for mid in piece.source_message_ids}
    if not wanted:
        return
    client_ids = client_ids_of([_uuid(mid) for mid in wanted])
    for piece in pieces:
        if piece.kind in ("summary", "shared", "recalled"):
            piece.client_ids = [client_ids[mid] for mid in map(_uuid, piece.source_message_ids) if mid in client_ids]


def _orm_client_ids(message_ids: list[uuid.UUID]) -> dict:
    return dict(Message.objects.filter(id__in=message_ids).exclude(client_id="").values_list("id", "client_id"))


def _uuid(value: str) -> uuid.UUID:
    return uuid.UUID(value)
