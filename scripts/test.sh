#!/usr/bin/env bash
# The whole test suite, as CI runs it on a CPU-only machine. Installs what it needs itself:
# test data and NVRTC (scripts/fetch-test-data.sh) and the default model (kiln fetches it on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
home="${KILN_HOME:-$HOME/.cache/kiln}"
./scripts/fetch-test-data.sh
swift build --product kiln
# The default model, fetched and verified once (the engine tests read it from the cache).
.build/debug/kiln info > /dev/null
# Every GPU kernel must compile for Hopper (NVRTC from PyPI works without a GPU); fails on compile errors and hot-kernel spills.
LD_LIBRARY_PATH="$home/nvrtc/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}" .build/debug/kiln check --compile-only --arch sm_90a
swift test --disable-swift-testing
# `kiln serve` end to end with the openai Python client (venv under $KILN_HOME), on the binary just built.
KILN_BIN=.build/debug/kiln ./scripts/serve-test.sh
