#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (see scripts/device-round.sh): kiln doctor, the kernel conformance suite
# and the memory-bound kernel benchmarks, with logs under $OUT (or ./device-logs).
set -uo pipefail
out="${OUT:-device-logs}"; mkdir -p "$out"
export KILN_HOME="${KILN_HOME:-/tmp/kiln-home}"   # kernel cache on the device; fresh machines start empty
kiln=/tmp/kiln
gunzip -c .carry/kiln.gz > "$kiln" && chmod +x "$kiln" || { echo "no .carry/kiln.gz: run scripts/device-round.sh first"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$out/nvidia-smi.log"
status=0
echo "== kiln doctor";       $kiln doctor        2>&1 | tee "$out/doctor.log"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "== kiln check";        $kiln check "$@"    2>&1 | tee "$out/check.log";  [ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "== kiln check --self-test"; $kiln check --self-test 2>&1 | tee "$out/selftest.log"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "== kiln check --bench"; $kiln check --bench 2>&1 | tee "$out/bench.log"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "== second check run (kernel cache warm)"; ( time $kiln check --self-test ) 2>&1 | tail -4
exit $status
