#!/usr/bin/env bash
# llama-cpp-python (the local model's server), built portable: ggml's default build targets the
# CPU that compiles it (-march=native), and a wheel built where AMX or AVX-512 exist dies with
# SIGILL on a machine (or VM) without them, while pip's cache hands that wheel to every later
# install of the same version. So the wheel is built once per version with GGML_NATIVE=OFF (AVX2,
# FMA, F16C: any x86-64 of the last decade), kept in Sentinel's own cache beside pip's, and
# installed from there. The first build takes about 8 minutes on 2 cores.
# Usage: scripts/install-llama.sh PYTHON [BUILD_LOG]   (BUILD_LOG: the compile's verbose output goes
#        there, where scripts/progress.sh reads its percentage; without it the build is quiet)
#        scripts/install-llama.sh --cached             (exit 0 if this version's wheel is cached)
set -euo pipefail
python="$1"
build_log="${2:-}"
cd "$(dirname "$0")/.."
version=$(sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' requirements-local.txt)
[ -n "$version" ] || { echo "install-llama: no llama-cpp-python pin in requirements-local.txt" >&2; exit 1; }
dir="${XDG_CACHE_HOME:-$HOME/.cache}/sentinel/wheels/llama-cpp-python-portable"
find_wheel() { ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1; }
wheel=$(find_wheel || true)
[ "$python" = "--cached" ] && { [ -n "$wheel" ]; exit; }
if [ -z "$wheel" ]; then
    echo "install-llama: building llama-cpp-python $version (portable CPU build, about 8 minutes on 2 cores)"
    mkdir -p "$dir"
    if [ -n "$build_log" ]; then
        CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
            "$python" -m pip wheel --verbose --no-deps --no-cache-dir "llama-cpp-python==$version" -w "$dir" >"$build_log" 2>&1
    else
        CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
            "$python" -m pip wheel --quiet --no-deps --no-cache-dir "llama-cpp-python==$version" -w "$dir"
    fi
    wheel=$(find_wheel)
fi
"$python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
