#!/usr/bin/env bash
# Fetches the data the test suite needs into $KILN_HOME (default ~/.cache/kiln), once:
#  - testdata/vocab: llama.cpp's tokenizer conformance files (ggml-vocab-*.gguf with .inp/.out pairs),
#    from the llama.cpp source package on PyPI (llama-cpp-python==0.3.36, a source distribution).
#  - nvrtc: NVRTC 13.0 from PyPI, so `kiln check --compile-only` can compile every kernel without a GPU.
#  - python: the `gguf` package (llama.cpp's Python reference, with numpy) from PyPI, whose dequantization the
#    GGUF block tests compare Kiln's with bit for bit (Tests/KilnModelsTests/GGUFDequantizeReferenceTests.swift),
#    and Hugging Face's `tokenizers` (no dependencies needed to load a tokenizer.json), the reference that the
#    tokenizer.json files Kiln writes from GGUF vocabularies are checked against (Tests/KilnTokenizerTests/HFTokenizerWriterTests.swift).
# The default model is fetched by kiln itself on first use.
set -euo pipefail
home="${KILN_HOME:-$HOME/.cache/kiln}"
vocab="$home/testdata/vocab"
if [ ! -f "$vocab/.complete" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary=llama-cpp-python llama-cpp-python==0.3.36 -d "$tmp"
  mkdir -p "$vocab"
  tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp" --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*'
  cp "$tmp"/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-* "$vocab"/
  rm -rf "$tmp"
  touch "$vocab/.complete"
fi
nvrtc="$home/nvrtc"
if [ ! -f "$nvrtc/.complete" ]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$nvrtc" nvidia-cuda-nvrtc==13.0.88
  touch "$nvrtc/.complete"
fi
python="$home/python"
if [ ! -f "$python/.complete" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$python" gguf==0.19.0 numpy==2.2.6
  touch "$python/.complete"
fi
if [ ! -f "$python/.tokenizers-complete" ]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$python" tokenizers==0.23.3
  touch "$python/.tokenizers-complete"
fi
echo "test data in $home"
