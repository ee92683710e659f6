#!/usr/bin/env bash
# Run HERE (a CPU machine with Swift): builds the static kiln binary, checks every kernel compiles
# for sm_90a with NVRTC, and stages the binary in .carry/ (git-ignored) for the GPU machine, which
# has CUDA but no Swift. Then prints the device command that runs scripts/device-check.sh there.
# SwiftPM embeds the kernel sources at build time (the EmbedKernels plugin of KilnKernels), so the
# binary always carries the .cu/.cuh files of this tree.
#   scripts/device-round.sh [--asan]
# --asan also builds kiln with AddressSanitizer on the host side into .carry/kiln-asan.gz (for scripts/device-asan.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
asan=0
case "${1:-}" in --asan) asan=1 ;; "") ;; *) echo "usage: $0 [--asan]"; exit 2 ;; esac
swift build -c release --static-swift-stdlib --product kiln --scratch-path .build-static
# Catch compile errors and spills here, for free, before spending device time.
.build-static/release/kiln check --compile-only --arch sm_90a | tail -1
# The static binary is ~58 MB and the device transfer allows 64 MiB in all: carry it gzipped (~23 MB).
mkdir -p .carry
rm -f .carry/kiln
strip -o .carry/kiln.tmp .build-static/release/kiln 2>/dev/null || cp .build-static/release/kiln .carry/kiln.tmp
gzip -c .carry/kiln.tmp > .carry/kiln.gz && rm .carry/kiln.tmp
ls -lh .carry/kiln.gz
if [ $asan = 1 ]; then
  # A static Swift stdlib is linked with --exclude-libs ALL, which also hides the ASan runtime's malloc/free when
  # swiftc links it from its archive (-sanitize=address): libcuda, NVRTC and cuBLASLt would then keep using glibc's
  # heap, unchecked, and a pointer crossing between the two heaps would abort in glibc. So the Swift code is
  # instrumented at the frontend only, and the runtime comes in as one relocatable object, exported through the
  # runtime's own dynamic list: every malloc/free of the process, dlopen'ed libraries included, goes through ASan.
  rt=$(dirname "$(readlink -f "$(command -v swift)")")/../lib/clang
  rt=$(ls -d "$rt"/*/lib/linux | head -1)
  mkdir -p .build-asan
  ld -r -o .build-asan/asan-runtime.o --whole-archive "$rt/libclang_rt.asan_static-x86_64.a" "$rt/libclang_rt.asan-x86_64.a"
  # The linker warns once per runtime symbol that is hidden by design (the __asan_check_* thunks and friends).
  swift build -c release --static-swift-stdlib --product kiln --scratch-path .build-asan \
    -Xswiftc -Xfrontend -Xswiftc -sanitize=address \
    -Xlinker "$PWD/.build-asan/asan-runtime.o" -Xlinker "--dynamic-list=$rt/libclang_rt.asan-x86_64.a.syms" \
    2>&1 | { grep -v "Cannot export local symbol" || true; }
  nm -D --defined-only .build-asan/release/kiln | grep -w malloc > /dev/null || { echo "the ASan binary does not export malloc"; exit 1; }
  ASAN_OPTIONS=detect_leaks=0 .build-asan/release/kiln check --compile-only --arch sm_90a | tail -1
  # Stripped: the Swift symbols stay in .dynsym (the static stdlib links with -export-dynamic), enough for stack
  # traces by function name. llvm-symbolizer travels with it (the device has none).
  strip -o .carry/kiln-asan.tmp .build-asan/release/kiln
  gzip -c .carry/kiln-asan.tmp > .carry/kiln-asan.gz && rm .carry/kiln-asan.tmp
  gzip -c "$(dirname "$(readlink -f "$(command -v swift)")")/llvm-symbolizer" > .carry/llvm-symbolizer.gz
  ls -lh .carry/kiln-asan.gz .carry/llvm-symbolizer.gz
else
  rm -f .carry/kiln-asan.gz .carry/llvm-symbolizer.gz   # a stale ASan binary would travel (24 MB) and mislead
fi
total=$(du -cb .carry | tail -1 | cut -f1)
[ "$total" -lt $((64 * 1024 * 1024)) ] || { echo ".carry is $total bytes, over the 64 MiB transfer limit"; exit 1; }
cat <<'MSG'
Now run on the device (device tool `run`):
  kind:    nvidia-h200
  carry:   [".carry"]
  command: bash scripts/device-check.sh
Logs come back under $OUT: doctor.log, check.log, bench.log.
With --asan: command `bash scripts/device-asan.sh` (ASan kiln check and reduced tune, compute-sanitizer memcheck).
MSG
