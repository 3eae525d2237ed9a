"""`make setup`'s install (scripts/install.sh) says what it does and how long is left, step by step.

The install runs for real with a stand-in Python (a venv and pip that only pretend, the llama
"compile" printing make's percentages), apt-get and sudo shimmed, no stdin and CI=true: every line
a CI log would show is checked, in about a second.
"""

import re
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_CALLS"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; ln -sf "$FAKE_SELF" "$3/bin/python"; exit 0; fi
if [ "$1 $2" = "-m pip" ]; then
    shift 2
    if [ -n "${FAKE_FAIL:-}" ] && [[ "$*" == *"$FAKE_FAIL"* ]]; then echo "fake pip: cannot install" >&2; exit 1; fi
    if [ "$1" = wheel ]; then
        for p in 12 47 93; do echo "[ $p%] Building C object vendor/llama.cpp/ggml.c.o"; sleep "${FAKE_PACE:-0.25}"; done
        touch "${@: -1}/llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    fi
    exit 0
fi
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def machine(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = executable(bin_dir / "fake-python", FAKE_PYTHON)
    for tool in ("apt-get", "sudo"):  # a machine missing a package is not changed by a test
        executable(bin_dir / tool, "#!/bin/sh\nexit 0\n")
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "CI": "true",
        "SENTINEL_PROGRESS_INTERVAL": "0.2",
        "FAKE_CALLS": str(tmp_path / "calls"),
        "FAKE_SELF": str(python),
    }
    return tmp_path, python, env


def install(machine, **extra_env) -> subprocess.CompletedProcess:
    tmp_path, python, env = machine
    return subprocess.run(
        ["bash", "scripts/install.sh", str(python), str(tmp_path / "venv")],
        cwd=ROOT,
        env={**env, **extra_env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def left(line: str) -> int:
    minutes, seconds = re.search(r"about (?:(\d+)m)?(\d+)s left in all", line).groups()
    return int(minutes or 0) * 60 + int(seconds)


def test_a_first_install_says_each_step_and_how_long_is_left(machine):
    done = install(machine)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    starts = [line for line in lines if re.match(r"sentinel setup: step \d of 7: ", line) and "usually about" in line]
    assert [int(re.search(r"step (\d)", line).group(1)) for line in starts] == [1, 2, 3, 4, 5, 6, 7]
    assert "compiling llama.cpp" in starts[3] and "usually about 8m00s" in starts[3], "an uncached llama is the 8-minute compile"
    assert left(starts[0]) > left(starts[3]) > left(starts[6]), "what is left shrinks step by step"
    assert sum(1 for line in lines if re.match(r"sentinel setup: step \d of 7 done in ", line)) == 7


def test_the_llama_compile_shows_the_builds_own_percentage(machine):
    done = install(machine)
    ticks = [line for line in done.stdout.splitlines() if "step 4 of 7: llama" in line and "usually" not in line]
    assert ticks, done.stdout
    assert any(re.search(r"build (12|47|93)%", line) for line in ticks), ticks
    assert all("left in all" in line for line in ticks)


def test_a_step_past_its_estimate_says_it_is_taking_longer_than_usual(machine):
    tmp_path, _, _ = machine
    times = tmp_path / "cache/sentinel/install-times"
    times.parent.mkdir(parents=True)
    times.write_text("llama-build 0\n")  # this machine once compiled it in no time
    done = install(machine, FAKE_PACE="0.5")  # 1.5 s: past a whole second whatever the clock's phase
    ticks = [line for line in done.stdout.splitlines() if "step 4 of 7: llama" in line and "usually" not in line]
    late = [line for line in ticks if re.search(r": [1-9]\d*s, ", line)]
    assert late and all("longer than usual" in line for line in late), ticks


def test_a_second_install_uses_the_cached_wheel_and_this_machines_times(machine):
    tmp_path, _, _ = machine
    assert install(machine).returncode == 0
    times = dict(line.split() for line in (tmp_path / "cache/sentinel/install-times").read_text().splitlines())
    assert {"system-packages", "venv", "llama-build", "torch", "requirements"} <= set(times)
    again = install(machine)
    assert again.returncode == 0, again.stderr
    step4 = next(line for line in again.stdout.splitlines() if "step 4 of 7:" in line)
    assert "from the cached portable wheel" in step4 and "usually about 10s" in step4
    torch = next(line for line in again.stdout.splitlines() if "step 5 of 7:" in line)
    assert f"usually about {times['torch']}s" in torch, "the estimate is the time this machine took"


def test_a_failing_step_stops_the_install_and_says_which(machine):
    tmp_path, _, _ = machine
    done = install(machine, FAKE_FAIL="torch==")
    assert done.returncode != 0
    assert "step 5 of 7 failed" in done.stderr and "fake pip: cannot install" in done.stderr
    assert "step 6 of 7" not in done.stdout, "nothing runs after a failure"
    assert "-r requirements.txt" not in (tmp_path / "calls").read_text()


def test_a_failed_compile_shows_the_end_of_its_log(machine):
    done = install(machine, FAKE_FAIL="llama-cpp-python==")
    assert done.returncode != 0
    assert "step 4 of 7 failed" in done.stderr and "the last lines of" in done.stderr
