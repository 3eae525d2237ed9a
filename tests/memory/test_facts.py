"""Facts: consolidation keeps short dated facts linked to their messages; a later one supersedes,
both stay, the newer ranks first; a model that lists none leaves the deterministic fallback's."""

from datetime import UTC, datetime

import pytest

from agents.models import Message
from memory import dreamer, embeddings, facts, search
from memory.context import assemble
from memory.models import ConsolidationRun, Memory, Summary
from tests.memory.helpers import FILLER, conversation_with
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db

NURSE = "I work as a veterinary nurse at the clinic downtown."
TEACHER = "Big news: I work as a biology teacher at the high school now."
JANUARY, FEBRUARY = datetime(2026, 1, 5, 10, tzinfo=UTC), datetime(2026, 2, 10, 10, tzinfo=UTC)


@pytest.fixture
def job_change(alice, settings):
    """60 messages, a job in January and another in February, consolidated span by span."""
    settings.SENTINEL = {**settings.SENTINEL, "DREAMER_SPAN_TOKENS": 150}
    texts = [FILLER[i % len(FILLER)] + f" ({i})" for i in range(60)]
    texts[2], texts[30] = NURSE, TEACHER
    conversation = conversation_with(alice, texts, consolidation_threshold=300, short_term_messages=6, recall_limit=4)
    Message.objects.filter(conversation=conversation, index__lt=30).update(occurred_at=JANUARY)
    Message.objects.filter(conversation=conversation, index__gte=30).update(occurred_at=FEBRUARY)
    return conversation


def script_jobs(stub_llm):
    stub_llm.when(
        "veterinary", lambda body: Reply(content="- The user is a nurse.\nFACT 2026-01-05 | user | job | veterinary nurse, clinic downtown")
    )
    stub_llm.when(
        "biology", lambda body: Reply(content="- The user changed jobs.\nFACT 2026-02-10 | user | job | biology teacher, high school")
    )
    stub_llm.script(*[Reply(content="- small talk about the weather and books") for _ in range(20)])


def test_consolidation_writes_dated_facts_linked_to_their_source_messages(job_change, stub_llm):
    script_jobs(stub_llm)
    dreamer.consolidate(job_change.id)
    nurse = Memory.objects.get(conversation=job_change, kind="fact", text__contains="veterinary")
    source = Message.objects.get(conversation=job_change, content=NURSE)
    assert nurse.source_message_ids == [source.id]
    assert nurse.occurred_at == JANUARY and nurse.fact_key == "user|job"
    assert nurse.text == "user, job: veterinary nurse, clinic downtown"
    summary = Summary.objects.get(id=source.summary_id)
    assert "FACT" not in summary.text and summary.first_at == JANUARY
    run = ConsolidationRun.objects.filter(conversation=job_change, facts__gt=0).first()
    assert run is not None and run.stage == "done" and run.consolidated_messages <= run.total_messages == 60


def test_a_later_contradicting_fact_supersedes_the_earlier_and_both_stay(job_change, stub_llm):
    script_jobs(stub_llm)
    dreamer.consolidate(job_change.id)
    nurse = Memory.objects.get(conversation=job_change, kind="fact", text__contains="veterinary")
    teacher = Memory.objects.get(conversation=job_change, kind="fact", text__contains="biology")
    assert teacher.supersedes_id == nurse.id and nurse.supersedes_id is None


def test_the_newer_fact_ranks_first_and_comes_along_with_the_older(job_change, stub_llm):
    script_jobs(stub_llm)
    dreamer.consolidate(job_change.id)
    question = "Where is the veterinary clinic I work at?"  # worded like the old fact
    hits = search.hybrid(job_change.tenant_id, embeddings.embed([question])[0], question, k=4, agent_id=job_change.agent_id)
    fact_hits = [hit.memory.text for hit in hits if hit.memory.kind == "fact"]
    assert fact_hits.index("user, job: biology teacher, high school") < fact_hits.index("user, job: veterinary nurse, clinic downtown")
    context = assemble(job_change, query=question, embed=embeddings.embed)
    rendered = context.messages[0]["content"]
    assert "[2026-02-10, fact, replaces an earlier fact] user, job: biology teacher" in rendered, rendered


def test_consolidation_never_deletes_a_fact(job_change, stub_llm):
    script_jobs(stub_llm)
    dreamer.consolidate(job_change.id)
    before = set(Memory.objects.filter(conversation=job_change, kind="fact").values_list("id", flat=True))
    Message.objects.filter(conversation=job_change).update(summary=None)  # as if every summary were forgotten
    Summary.objects.filter(conversation=job_change).delete()
    stub_llm.script(*[Reply(content="- again\nFACT 2026-02-10 | user | job | biology teacher, high school") for _ in range(20)])
    dreamer.consolidate(job_change.id)
    after = set(Memory.objects.filter(conversation=job_change, kind="fact").values_list("id", flat=True))
    assert before and before <= after


def test_a_model_that_lists_no_facts_leaves_the_first_person_statements(job_change, stub_llm):
    stub_llm.script(*[Reply(content="- they chatted") for _ in range(20)])
    dreamer.consolidate(job_change.id)
    texts = set(Memory.objects.filter(conversation=job_change, kind="fact").values_list("text", flat=True))
    assert f"user: {NURSE}" in texts
    teacher = Memory.objects.get(conversation=job_change, kind="fact", text__contains="biology")
    assert teacher.supersedes.text == f"user: {NURSE}", "the fallback's keys link updates too"


def test_a_fact_no_message_backs_is_dropped():
    message = Message(content="We talked about the garden.", occurred_at=JANUARY, role="user")
    assert facts.parse(["FACT 2026-01-05 | user | pet | a purple elephant"], [message]) == []
    parsed = facts.parse(["FACT 2026-01-05 | user | hobby | the garden"], [message])
    assert [fact.key for fact in parsed] == ["user|hobby"]


def test_the_fallback_takes_statements_with_a_name_or_an_adverb_between():
    said = [
        "I finally adopted a beagle puppy from the shelter.",
        "My sister Ingrid just moved to Trondheim for her PhD.",
        "I've been learning the cello every Tuesday evening.",
        "I was thinking about cars and jobs and all that.",
        "Someone on the bus was reading, I wondered what it was.",
    ]
    messages = [Message(content=text, role="user", name="Mara", occurred_at=JANUARY) for text in said]
    found = facts.fallback(messages)
    assert [fact.key for fact in found] == ["mara|adopted", "mara|sister", "mara|learning"], (
        "the first three are statements about the speaker; thinking and wondering are talk"
    )
    assert found[1].text == f"Mara: {said[1]}"


def test_a_fact_line_without_a_date_is_dated_by_its_message():
    message = Message(content="I adopted a beagle called Biscuit.", occurred_at=FEBRUARY, role="user")
    parsed = facts.parse(["FACT Mara | pet | beagle called Biscuit"], [message])
    assert [(fact.key, fact.occurred_at) for fact in parsed] == [("mara|pet", FEBRUARY)]
