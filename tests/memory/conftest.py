import pytest

from memory import embeddings


def use_embeddings(settings, kind: str) -> None:
    """Configure the embedding model for this test (pytest-django restores the settings after)."""
    settings.SENTINEL = {**settings.SENTINEL, "EMBEDDINGS": kind}
    embeddings.embedder.cache_clear()


@pytest.fixture
def local_embeddings(settings):
    """MiniLM itself, for the tests of what only a model worth caching does (cache, prefetch)."""
    use_embeddings(settings, "local")
    yield
    embeddings.embedder.cache_clear()


@pytest.fixture
def onnx_embeddings(settings):
    """The ONNX model (the default outside tests), which keeps recent vectors in Redis."""
    use_embeddings(settings, "onnx")
    yield embeddings.embedder()
    embeddings.embedder.cache_clear()
