#!/usr/bin/env bash
# The first install behind `make setup` (and so `make run` and `make test`), step by step with
# progress (scripts/progress.sh): what each step does, the time spent and about how long is left.
# The estimates are durations measured on 2 cores; this machine's own replace them once recorded.
# The llama.cpp compile, the longest step by far, also shows the build's own percentage.
# Usage: scripts/install.sh PYTHON VENV
set -euo pipefail
python="$1"
venv="$2"
cd "$(dirname "$0")/.."
source scripts/progress.sh
bin="$venv/bin"
logs="${XDG_CACHE_HOME:-$HOME/.cache}/sentinel/logs"
mkdir -p "$logs"

# The llama step is a compile (about 8 minutes) unless the portable wheel of this version is cached.
if bash scripts/install-llama.sh --cached; then llama="llama-cached:10"; else llama="llama-build:480"; fi
torch_pin=$(grep -E '^torch==' requirements-embeddings.txt)

progress_plan "system-packages:60" "venv:10" "pip-upgrade:15" "$llama" "torch:90" "requirements:150" "requirements-nodeps:10"
progress_step system-packages "system packages (apt-get: a C toolchain, cmake, redis-server, chromium; only what is missing)" --interactive -- \
    bash scripts/install-system-packages.sh
progress_step venv "the virtualenv in $venv" -- bash -c "test -x '$bin/python' || '$python' -m venv '$venv'"
progress_step pip-upgrade "pip and wheel" -- "$bin/python" -m pip install --quiet --upgrade pip wheel
if [ "${llama%%:*}" = llama-build ]; then
    progress_step llama-build "llama-cpp-python: compiling llama.cpp for any x86-64 CPU (kept in ~/.cache/sentinel/wheels)" \
        --log "$logs/llama-build.log" -- bash scripts/install-llama.sh "$bin/python" "$logs/llama-build.log"
else
    progress_step llama-cached "llama-cpp-python from the cached portable wheel" -- bash scripts/install-llama.sh "$bin/python"
fi
progress_step torch "$torch_pin (a CPU build, for exporting the embedding model)" -- \
    "$bin/python" -m pip install --quiet --progress-bar off "$torch_pin"
progress_step requirements "the pip requirements (Django, Celery, the clients the tests try, ...)" -- \
    env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$bin/python" -m pip install --quiet --progress-bar off \
    -r requirements.txt -r requirements-local.txt -r requirements-dev.txt
progress_step requirements-nodeps "the packages installed without their declared dependencies" -- \
    "$bin/python" -m pip install --quiet --progress-bar off --no-deps -r requirements-nodeps.txt
