from agents.models import Conversation, Message
from memory import embeddings, indexing


def model_calls(monkeypatch) -> list[list[str]]:
    """Every list of texts the configured model's thread is asked to embed, by any path (a queued
    model's: onnx, local)."""
    calls: list[list[str]] = []
    model = embeddings.embedder()
    original = model.submit
    monkeypatch.setattr(model, "submit", lambda texts, urgent=True: calls.append(list(texts)) or original(texts, urgent))
    return calls


def conversation_with(actor, texts, *, index=True, **agent_fields):
    """A conversation of alternating user/assistant messages, one import batch, indexed."""
    for name, value in agent_fields.items():
        setattr(actor.agent, name, value)
    actor.agent.save()
    conversation = Conversation.objects.create(tenant=actor.tenant, agent=actor.agent, last_seq=1)
    Message.objects.bulk_create(
        Message(tenant=actor.tenant, conversation=conversation, seq=1, index=i, role="user" if i % 2 == 0 else "assistant", content=text)
        for i, text in enumerate(texts)
    )
    if index:
        indexing.index_pending()
        actor.agent.refresh_from_db(fields=["has_memories"])  # as a turn's claim reads it
    return conversation


FILLER = [
    "Let's talk about the weather today, it looks cloudy over the hills.",
    "Sure, clouds often gather in the afternoon this time of the year.",
    "I have been reading a novel about sailing across the Atlantic.",
    "Sailing stories can be thrilling, with storms and long calm days.",
    "My favourite breakfast is porridge with some berries on top.",
    "Porridge with berries is a healthy and warming way to start the day.",
    "Yesterday I fixed the squeaky hinge on the garden gate.",
    "A little oil usually quiets a squeaky hinge for a long while.",
]
