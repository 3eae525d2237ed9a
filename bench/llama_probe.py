"""The local model's speed on one Dreamer consolidation, called through llama_cpp directly (issue 16).

    python -m bench.llama_probe [--threads=2] [--threads-batch=2] [--batch=512] [--ubatch=512]
                                [--flash] [--logits-all] [--max-tokens=64] [--model=PATH] [--repeat=2]

The prompt is the Dreamer's own (its instructions and the transcript of the dialogue benchmark's
first 100 messages) through the model's chat template; no server, no HTTP. Prompt processing and
generation are timed by llama.cpp's own counters (llama_perf_context), the KV cache cleared before
each repeat so nothing is reused; the process's CPU seconds show what the load beside it took.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
django.setup()

import llama_cpp  # noqa: E402

from bench import dialogue_data  # noqa: E402
from memory import dreamer  # noqa: E402
from sentinel_site import stack  # noqa: E402

SPAN = 100


def messages(span: int = SPAN) -> list[SimpleNamespace]:
    """The dialogue's first messages shaped as the Dreamer reads them (no database)."""
    return [
        SimpleNamespace(
            role=m["role"],
            name=m["name"],
            content=m["content"],
            tool_calls=None,
            occurred_at=datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")),
        )
        for m in dialogue_data.load()["messages"][:span]
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--threads-batch", type=int, default=0)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--ubatch", type=int, default=512)
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--flash", action="store_true")
    parser.add_argument("--logits-all", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--show", action="store_true", help="print the model's answer")
    args = parser.parse_args()
    llm = llama_cpp.Llama(
        model_path=args.model or str(stack.local_model_path()),
        n_ctx=args.ctx,
        n_batch=args.batch,
        n_ubatch=args.ubatch,
        n_threads=args.threads,
        n_threads_batch=args.threads_batch or args.threads,
        flash_attn=args.flash,
        logits_all=args.logits_all,
        verbose=False,
    )
    chat = [{"role": "system", "content": dreamer.PROMPT}, {"role": "user", "content": dreamer._transcript(messages())}]
    for i in range(args.repeat):
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
        llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
        # Streamed: the first chunk comes once the prompt is evaluated (and one token sampled), so the
        # process's CPU and wall time split there into prompt processing and generation.
        cpu0, wall0 = time.process_time(), time.monotonic()
        text, n_gen = [], 0
        for chunk in llm.create_chat_completion(messages=chat, max_tokens=args.max_tokens, temperature=0, stream=True):
            delta = chunk["choices"][0]["delta"].get("content")
            if delta is None:
                continue
            if n_gen == 0:
                prompt_cpu, prompt_wall = time.process_time() - cpu0, time.monotonic() - wall0
            text.append(delta)
            n_gen += 1
        gen_cpu, gen_wall = time.process_time() - cpu0 - prompt_cpu, time.monotonic() - wall0 - prompt_wall
        perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
        n_prompt, n_gen = perf.n_p_eval, perf.n_eval
        print(
            f"run {i}: prompt {n_prompt} tok: {prompt_cpu:.2f} cpu-s ({n_prompt / prompt_cpu:.0f} tok/cpu-s), "
            f"{prompt_wall:.2f} s wall ({n_prompt / prompt_wall:.0f} tok/s) | gen {n_gen} tok: {gen_cpu:.2f} cpu-s "
            f"({n_gen / max(1e-3, gen_cpu):.1f} tok/cpu-s), {gen_wall:.2f} s wall ({n_gen / max(1e-3, gen_wall):.1f} tok/s) | load "
            + Path("/proc/loadavg").read_text().split()[0],
            flush=True,
        )
        if args.show and i == args.repeat - 1:
            print("".join(text))


if __name__ == "__main__":
    main()
