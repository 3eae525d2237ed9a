"""wrk against an OpenAI-compatible endpoint: every request a distinct text (`bench/texts.py`), every
answer counted by status, and a 503 counted apart when it carried Retry-After (a deliberate shed).
Sentinel and the LiteLLM anchor run the same script; only the URL, model and key differ."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.texts import RUN, WORDS

SHED = "503 with Retry-After"

SCRIPT = r"""-- written by bench/wrk.py
local words = {%(words)s}
local run, model = "%(run)s", "%(model)s"
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(auth)s

local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

statuses = {}
function init(args)
  math.randomseed(os.time() + 7919 * id)
end

function request()
  counter = counter + 1
  local picked = {}
  for i = 1, 8 do picked[i] = words[math.random(#words)] end
  local text = run .. "-" .. id .. "-" .. counter .. " " .. table.concat(picked, " ")
  return wrk.format(nil, nil, nil,
    '{"model": "' .. model .. '", "messages": [{"role": "user", "content": "' .. text .. '"}]}')
end

function response(status, headers, body)
  local key = tostring(status)
  if status == 503 then
    for name, _ in pairs(headers) do
      if string.lower(name) == "retry-after" then key = "503+retry-after" end
    end
  end
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("statuses")) do total[key] = (total[key] or 0) + n end
  end
  for key, n in pairs(total) do io.write(string.format("answered %%s %%d\n", key, n)) end
end
"""


@dataclass
class WrkResult:
    clients: int
    seconds: float
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    # "200", "503 with Retry-After", "503", "timeout", "read error", ...: every request in exactly one
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.isdigit() and status.startswith("2"))

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def success(self) -> float:
        return self.ok / self.answered if self.answered else 0.0

    def by_status(self) -> str:
        """`200: 4,120; 503 with Retry-After: 12` in a stable order (2xx first, then by count)."""
        if not self.statuses:
            return "none"
        order = sorted(self.statuses.items(), key=lambda kv: (not kv[0].startswith("2"), -kv[1], kv[0]))
        return "; ".join(f"{status}: {n:,}" for status, n in order)


def script(path: Path, model: str, key: str = "") -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    words = ", ".join(f'"{w}"' for w in WORDS)
    path.write_text(SCRIPT % {"words": words, "run": RUN, "model": model, "auth": auth})
    return path


def _unit_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def parse(out: str, clients: int, seconds: float) -> WrkResult:
    result = WrkResult(clients, seconds)
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", out):
        result.requests = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result.rps = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        result.p50_ms = _unit_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        result.p99_ms = _unit_ms(m.group(1))
    for status, n in re.findall(r"^answered (\S+) (\d+)$", out, re.M):
        result.statuses[SHED if status == "503+retry-after" else status] = int(n)
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        # No answer at all: a timed-out request, a connection refused or broken mid-request (wrk opens
        # another and goes on). Each is counted as one failed request.
        for name, n in zip(("connect error", "read error", "write error", "timeout"), m.groups(), strict=True):
            if int(n):
                result.statuses[name] = int(n)
    return result


def run(url: str, lua: Path, clients: int, seconds: float, log: Path, cwd: Path) -> WrkResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make bench installs it)")
    argv = ["wrk", "-t2", f"-c{clients}", f"-d{seconds:.0f}s", "--timeout", "60s", "--latency", "-s", str(lua), url]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd).stdout
    log.write_text(out)
    return parse(out, clients, seconds)
