#!/usr/bin/env bash
# Build llama.cpp's llama-quantize and llama-imatrix (CPU, Release) from the sources vendored in the
# PyPI source archive of llama-cpp-python, into benchmarks/peers/llamacpp/build/ (untracked).
# Usage: bash benchmarks/peers/llamacpp/setup.sh [VERSION]   (default 0.3.36; needs cmake and a C++ compiler)
# Only llama-cpp-python comes as source (its build tools as wheels: pip prepares its metadata).
# Idempotent: a second run only checks that both binaries exist.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=${1:-0.3.36}
BUILD=build
BIN=$BUILD/cmake/bin
if [ -x "$BIN/llama-quantize" ] && [ -x "$BIN/llama-imatrix" ]; then
  echo "llama.cpp tools present in $BIN"; exit 0
fi
command -v cmake >/dev/null || { echo "cmake not found: install cmake (>= 3.14) and a C++ compiler" >&2; exit 1; }
PY=${PYTHON:-../../../.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$BUILD/sdist"
if ! ls "$BUILD"/sdist/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$BUILD/sdist"
fi
ARCHIVE=$(ls "$BUILD"/sdist/llama_cpp_python-*.tar.gz | head -1)
SRC=$BUILD/src
if [ ! -d "$SRC" ]; then
  mkdir -p "$SRC.tmp" && tar -xzf "$ARCHIVE" -C "$SRC.tmp" --strip-components=1 && mv "$SRC.tmp" "$SRC"
fi
LLAMA=$SRC/vendor/llama.cpp
[ -f "$LLAMA/CMakeLists.txt" ] || { echo "no vendored llama.cpp in $ARCHIVE" >&2; exit 1; }
cmake -S "$LLAMA" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DGGML_OPENMP=OFF
cmake --build "$BUILD/cmake" --config Release -j "${JOBS:-2}" --target llama-quantize llama-imatrix
"$BIN/llama-quantize" --help 2>&1 | head -1 || true
echo "built $BIN/llama-quantize and $BIN/llama-imatrix from $(basename "$ARCHIVE")"
