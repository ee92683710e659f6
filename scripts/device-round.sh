#!/usr/bin/env bash
# Run HERE (a CPU machine with Swift): builds the static kiln binary, checks every kernel compiles
# for sm_90a with NVRTC, and stages the binary in .carry/ (git-ignored) for the GPU machine, which
# has CUDA but no Swift. Then prints the device command that runs scripts/device-check.sh there.
# SwiftPM embeds the kernel sources at build time (the EmbedKernels plugin of KilnKernels), so the
# binary always carries the .cu/.cuh files of this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product kiln --scratch-path .build-static
# Catch compile errors and spills here, for free, before spending device time.
.build-static/release/kiln check --compile-only --arch sm_90a | tail -1
# The static binary is ~58 MB and the device transfer allows 64 MiB in all: carry it gzipped (~23 MB).
mkdir -p .carry
rm -f .carry/kiln
strip -o .carry/kiln.tmp .build-static/release/kiln 2>/dev/null || cp .build-static/release/kiln .carry/kiln.tmp
gzip -c .carry/kiln.tmp > .carry/kiln.gz && rm .carry/kiln.tmp
ls -lh .carry/kiln.gz
cat <<'MSG'
Now run on the device (device tool `run`):
  kind:    nvidia-h200
  carry:   [".carry"]
  command: bash scripts/device-check.sh
Logs come back under $OUT: doctor.log, check.log, bench.log.
MSG
