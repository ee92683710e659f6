#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: the memory-error hunt for the `kiln tune` abort seen once (issue 16 item 6; docs/perf-notes.md
# session 8: glibc "free(): invalid pointer" / "double free or corruption"). Build here first with
# `scripts/device-round.sh --asan` (it stages .carry/kiln.gz, .carry/kiln-asan.gz and .carry/llvm-symbolizer.gz), then
# on the device (kind nvidia-h200, carry [".carry"]):
#   bash scripts/device-asan.sh [STEP...]      (no steps: asan-check asan-tune memcheck-check, about 9 minutes at most)
# Steps (each under a time limit; together they stop before the device's 10-minute call limit):
#   asan-check      kiln check, host side under AddressSanitizer (every malloc/free of the process, libcuda's included)
#   asan-tune       kiln tune under ASan: --m 1,16, then --m 1, --m 16 and --m 64 as separate processes on one table
#   memcheck-check  kiln check (normal binary) under compute-sanitizer --tool memcheck: out-of-bounds device accesses
#   memcheck-tune   kiln tune --m 1 (normal binary) under compute-sanitizer memcheck (a second call: it is slow)
#   debug-tune      the original command (normal binary, kiln tune, every M) with glibc's checking malloc and under
#                   cuda-gdb, so that a recurrence of the abort ends with a backtrace of every thread
# Logs: $OUT/summary.txt and $OUT/asan-logs-<steps>.tgz. Exit status 1 when any step found something or failed.
# An ASan report names frames by function (the Swift symbols are exported); the unstripped binary with the same
# build id stays in .build-asan/release/kiln on the build machine for `llvm-symbolizer --obj=... 0xOFFSET`.
set -uo pipefail
out="${OUT:-device-logs}"; mkdir -p "$out"
logs=/tmp/kiln-asan-logs; mkdir -p "$logs"
export KILN_HOME="${KILN_HOME:-/tmp/kiln-home}"   # shared with device-engine.sh: a warm machine keeps its kernel cache
for f in kiln kiln-asan llvm-symbolizer; do
  if [ ! -x "/tmp/$f" ] || [ ".carry/$f.gz" -nt "/tmp/$f" ]; then
    gunzip -c ".carry/$f.gz" > "/tmp/$f" && chmod +x "/tmp/$f" || { echo "no .carry/$f.gz: run scripts/device-round.sh --asan first"; exit 1; }
  fi
done
# libcuda maps memory inside ASan's shadow gap (protect_shadow_gap=0) and leaks by design at exit (detect_leaks=0;
# LeakSanitizer also needs ptrace, which gVisor refuses). handle_abort: a glibc or Swift abort prints a stack too.
export ASAN_OPTIONS="protect_shadow_gap=0:replace_intrin=0:detect_leaks=0:halt_on_error=1:exitcode=86:handle_abort=1:handle_sigill=1:symbolize=1:external_symbolizer_path=/tmp/llvm-symbolizer:malloc_context_size=30:print_cmdline=1:fast_unwind_on_fatal=0"
dummy="--dummy-weights llama3-8b"
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(asan-check asan-tune memcheck-check)
t_start=$(date +%s); deadline=$((t_start + ${DEADLINE_S:-560}))
status=0
summary() { echo "$*" | tee -a "$logs/summary.txt"; }
step() {  # step NAME SECONDS CMD... : runs with a time limit (cut to the call's deadline); full log in $logs/NAME.log
  local name=$1 secs=$2; shift 2
  local left=$((deadline - $(date +%s)))
  [ $left -lt $secs ] && secs=$left
  if [ $secs -lt 30 ]; then summary "-- $name skipped: ${left} s left before the deadline"; status=1; return; fi
  echo "== $name (limit $secs s)"; local t0=$(date +%s)
  timeout -k 10 "$secs" "$@" > "$logs/$name.log" 2>&1; local rc=$?
  tail -n "${TAIL:-15}" "$logs/$name.log"
  local asan; asan=$(grep -m1 -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|AddressSanitizer:DEADLYSIGNAL" "$logs/$name.log")
  local result; result=$(grep -E "^[0-9]+ passed, [0-9]+ failed|^saved [0-9]+ entries|ERROR SUMMARY" "$logs/$name.log" | tail -1)
  # glibc's heap-check messages, and how cuda-gdb reports a signal.
  local glibc; glibc=$(grep -m1 -E "free\(\): |double free or corruption|malloc\(\): |corrupted size|munmap_chunk|Program received signal|Program terminated with signal" "$logs/$name.log")
  [ $rc = 134 ] && glibc="${glibc:-killed by SIGABRT}"
  summary "-- $name rc=$rc ($(( $(date +%s) - t0 )) s)${result:+; $result}${asan:+; ASAN: $asan}${glibc:+; glibc: $glibc}"
  [ $rc = 124 ] && summary "   $name hit its time limit: the log holds what ran"
  [ $rc = 0 ] && [ -z "$asan" ] && [ -z "$glibc" ] || status=1
}
{
  date -u; uname -r   # 4.4.0: gVisor (compute-sanitizer refuses the device there); *-fc-*: Firecracker
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
  head -1 /proc/driver/nvidia/version 2>/dev/null   # "Open Kernel Module" or not
  # With HMM (open kernel module, recent Linux), a GPU access outside every device allocation reaches the process's
  # host pages instead of faulting: a wild GPU pointer could then corrupt glibc's heap.
  nvidia-smi -q 2>/dev/null | grep -i "addressing mode"; echo "uvm_disable_hmm=$(cat /sys/module/nvidia_uvm/parameters/uvm_disable_hmm 2>/dev/null)"
  ldd --version | head -1; compute-sanitizer --version 2>&1 | tail -1; cuda-gdb --version 2>&1 | head -1
  echo "kernel cache: $(ls "$KILN_HOME/kernels" 2>/dev/null | wc -l) files in $KILN_HOME/kernels"
} 2>&1 | tee "$logs/machine.txt"
summary "machine: $(uname -r), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1)"
cs="compute-sanitizer --tool memcheck --leak-check no --error-exitcode 3 --print-limit 100"
for s in "${steps[@]}"; do
  case $s in
    asan-check) TAIL=8 step asan-check 240 /tmp/kiln-asan check ;;
    asan-tune)
      # Session 8's aborts came at the start of an M = 1 run and after an M = 16 run, separate processes sharing one
      # table: so the M list of the issue in one process, then M = 1 and M = 16 each in its own (start-up, table
      # load, exit), then the Hopper prefill family (M = 64).
      # The tuner's host work is light, so it also gets fake stack frames: a pointer to a local that outlives its
      # frame (a withUnsafe... escape) is reported when it is used.
      t="$logs/t.json"
      ASAN_OPTIONS="$ASAN_OPTIONS:detect_stack_use_after_return=1" step asan-tune 200 bash -c "set -e; for m in 1,16 1 16 64; do echo \"== kiln tune --m \$m\"; /tmp/kiln-asan tune $dummy --m \$m --tune-cache $t; done" ;;
    memcheck-check) TAIL=20 step memcheck-check 420 $cs /tmp/kiln check ;;
    memcheck-tune) TAIL=20 step memcheck-tune 420 $cs /tmp/kiln tune $dummy --m 1 --tune-cache "$logs/t-memcheck.json" ;;
    debug-tune)
      malloc_debug=$(ls /lib/x86_64-linux-gnu/libc_malloc_debug.so.0 /usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0 2>/dev/null | head -1)
      [ -n "$malloc_debug" ] || summary "   no libc_malloc_debug.so.0 here: glibc's heap checks stay off"
      # glibc.malloc.check=3 needs libc_malloc_debug preloaded (glibc >= 2.34); perturb fills freed memory, so a
      # use after free reads garbage at once instead of the old value.
      step debug-tune 300 cuda-gdb -q -batch -ex "set pagination off" -ex "set confirm off" -ex "set cuda api_failures ignore" \
        ${malloc_debug:+-ex "set environment LD_PRELOAD $malloc_debug"} \
        -ex "set environment GLIBC_TUNABLES glibc.malloc.check=3:glibc.malloc.perturb=165" \
        -ex run -ex "thread apply all bt 30" --args /tmp/kiln tune $dummy --tune-cache "$logs/t-debug.json" ;;
    *) summary "unknown step: $s"; status=1 ;;
  esac
done
cp "$logs/summary.txt" "$out/summary.txt"
tar czf "$out/asan-logs-$(IFS=-; echo "${steps[*]}").tgz" -C "$(dirname "$logs")" "$(basename "$logs")"
exit $status
