#!/usr/bin/env bash
# Builds one llama.cpp tool (llama-bench, llama-quantize, …) once into $KILN_HOME/llama.cpp-build and prints its path.
# The source is the llama.cpp inside the llama-cpp-python==0.3.36 source package on PyPI (the package
# scripts/fetch-test-data.sh already uses); cmake comes from pip when missing. The default CPU build
# (GGML_NATIVE: -march=native), as a llama.cpp user builds it. Used by scripts/bench-cpu.sh and scripts/lut-quality.sh;
# not run in CI.
#   usage: scripts/llama-cpp-tool.sh TOOL
set -euo pipefail
tool="$1"
home="${KILN_HOME:-$HOME/.cache/kiln}"
build="$home/llama.cpp-build"
bin="$build/cmake/bin/$tool"
if [ ! -x "$bin" ]; then
  cmake_bin="$(command -v cmake || true)"
  if [ -z "$cmake_bin" ]; then
    python3 -m pip install -q --disable-pip-version-check --target "$build/cmake-pip" cmake >&2
    cmake_bin="$(ls "$build"/cmake-pip/cmake/data/bin/cmake)"
  fi
  src="$build/src"
  if [ ! -d "$src/llama.cpp" ]; then
    tmp=$(mktemp -d)
    python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary=llama-cpp-python llama-cpp-python==0.3.36 -d "$tmp" >&2
    mkdir -p "$src"
    tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
    mv "$tmp"/llama_cpp_python-0.3.36/vendor/llama.cpp "$src/llama.cpp"
    rm -rf "$tmp"
  fi
  if [ ! -f "$build/cmake/CMakeCache.txt" ]; then
    "$cmake_bin" -S "$src/llama.cpp" -B "$build/cmake" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DGGML_OPENMP=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >/dev/null
  fi
  "$cmake_bin" --build "$build/cmake" --target "$tool" -j "$(nproc)" >/dev/null
fi
echo "$bin"
