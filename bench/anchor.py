"""The anchor measured in the same run: LiteLLM's proxy (two workers, no database: it forwards and
keeps nothing durable) in its own virtualenv under var/, forwarding to the bench's stub.

The virtualenv is made on the first run (about 1.5 minutes; pip's cache makes a remake fast).
Anything that keeps LiteLLM from installing or starting is returned as a reason the report
prints; it never stops the rest of the run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from bench.harness import LOGS, descendants, free_port, wait_http
from sentinel_site.stack import BASE_DIR

# The newest release whose `[proxy]` extra installs from PyPI's index as reachable here: later ones
# pin litellm-proxy, litellm-proxy-extras and litellm-enterprise builds it does not carry. It also
# predates 1.107.0, the release that was compromised.
VERSION = "1.106.12"
VENV = BASE_DIR / "var" / "litellm-venv"
MODEL = "stub-model"
WORKERS = 2

CONFIG = """model_list:
  - model_name: %(model)s
    litellm_params:
      model: openai/%(model)s
      api_base: %(stub)s
      api_key: bench
litellm_settings:
  drop_params: true
general_settings:
  disable_spend_logs: true
"""


def install() -> Path:
    """The proxy's executable, installing it first if this version is not there yet."""
    binary, marker = VENV / "bin" / "litellm", VENV / f".installed-{VERSION}"
    if binary.exists() and marker.exists():
        return binary
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, timeout=300)
    log = LOGS / "litellm-install.log"
    with log.open("wb") as out:
        code = subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", f"litellm[proxy]=={VERSION}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        ).returncode
    if code or not binary.exists():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("ERROR")][-1:]
        raise RuntimeError(f"pip install litellm[proxy]=={VERSION} failed ({tail[0] if tail else f'exit {code}'}; see {log})")
    marker.touch()
    return binary


class LiteLLM:
    """LiteLLM's proxy on a free port, `WORKERS` uvicorn workers, one model: the bench's stub."""

    def __init__(self, stub_url: str) -> None:
        self.stub_url = stub_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.key = "sk-" + secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None

    def start(self) -> LiteLLM:
        binary = install()
        config = LOGS / "litellm.yaml"
        config.write_text(CONFIG % {"model": MODEL, "stub": self.stub_url})
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": self.key,  # the proxy refuses to start without one
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet at start
            "LITELLM_LOG": "ERROR",
        }
        for name in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY"):
            env.pop(name, None)  # no database, no cache: the proxy forwards and keeps nothing
        argv = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", str(WORKERS)]
        log = (LOGS / "litellm.log").open("wb")
        self.process = subprocess.Popen(argv, cwd=LOGS, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"{self.base_url}/health/liveliness", 180, "LiteLLM's proxy", self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)] if self.process else []

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)  # its own session: the uvicorn workers go with it
            self.process.wait()


def start(stub_url: str) -> tuple[LiteLLM | None, str]:
    """The running proxy, or None and why not."""
    try:
        return LiteLLM(stub_url).start(), ""
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return None, str(exc)
