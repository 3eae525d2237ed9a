#!/usr/bin/env bash
# System packages Sentinel needs on Debian/Ubuntu: a C toolchain and cmake (llama-cpp-python
# compiles on first install), redis-server (started when no Redis answers) and chromium (the
# admin's browser tests drive it through playwright; no browser is downloaded). Installs only
# what is missing; needs root (or sudo) only when something is.
set -euo pipefail
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(build-essential)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
# `make bench` drives load with wrk.
[ "${1:-}" = "--bench" ] && { command -v wrk >/dev/null 2>&1 || missing+=(wrk); }
[ ${#missing[@]} -eq 0 ] && exit 0
echo "sentinel: installing system packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "sentinel: need root to install ${missing[*]}; install them and re-run" >&2; exit 1
  fi
else SUDO=""; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts redis-server as a service on install; Sentinel starts its own only when none answers.
