#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: the speed of two kiln binaries, measured in one call, each with its own kernel cache and
# tuning table ($KILN_HOME per binary) and the same tuning procedure. For "this change costs no time" claims.
#   bash scripts/device-ab.sh A.gz B.gz [STEP...]     (A is the baseline; default steps: tune kernels decode)
# Steps, each run for A then B (decode alternates A B A B: a drifting clock shows as a trend, not as a gap):
#   tune     kiln tune --dummy-weights llama3-8b (every M bucket; skipped where the binary's table already exists)
#   kernels  kiln bench kernels, M = 1…16 (graph-timed, against cuBLASLt)
#   decode   kiln bench-gpu bs=2 p512 tg256 r3 with the tuned table (pp512 and decode ms/step), twice each
# Full logs: $OUT/ab-logs.tgz; the lines that carry the numbers: $OUT/ab-summary.txt, written as they come (a call cut
# short by its time limit still brings back what ran).
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 A.gz B.gz [tune|kernels|decode]..."; exit 2; }
out="${OUT:-device-logs}"; mkdir -p "$out"
logs=/tmp/kiln-ab-logs; mkdir -p "$logs"
a_gz=$1; b_gz=$2; shift 2
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(tune kernels decode)
for side in a b; do
  gz=$a_gz; [ $side = b ] && gz=$b_gz
  # A binary already unpacked by an earlier call on this warm machine is kept when its .gz did not travel this time.
  if [ -f "$gz" ] && { [ ! -x /tmp/kiln-$side ] || [ "$gz" -nt /tmp/kiln-$side ]; }; then
    gunzip -c "$gz" > /tmp/kiln-$side && chmod +x /tmp/kiln-$side
  fi
  [ -x /tmp/kiln-$side ] || { echo "no binary for $side: $gz"; exit 1; }
  mkdir -p /tmp/kiln-home-$side
done
dummy="--dummy-weights llama3-8b"
status=0
run() {  # run SIDE NAME SECONDS ARGS... : kiln of SIDE with its own KILN_HOME; log in $logs/SIDE-NAME.log
  local side=$1 name=$2 secs=$3; shift 3
  local t0=$(date +%s)
  KILN_HOME=/tmp/kiln-home-$side timeout "$secs" /tmp/kiln-$side "$@" > "$logs/$side-$name.log" 2>&1; local rc=$?
  echo "-- $side $name rc=$rc ($(( $(date +%s) - t0 )) s)" | tee -a "$out/ab-summary.txt"
  [ $rc = 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/ab-summary.txt"
for s in "${steps[@]}"; do
  case $s in
    tune)
      for side in a b; do
        if ls /tmp/kiln-home-$side/tune/*.json > /dev/null 2>&1; then echo "-- $side tune: table exists" | tee -a "$out/ab-summary.txt"
        else run $side tune 300 tune $dummy; fi
      done ;;
    kernels)
      for side in a b; do
        run $side kernels 200 bench kernels $dummy --m 1,2,4,8,16
        grep -E "^\|" "$logs/$side-kernels.log" | sed "s/^/$side /" >> "$out/ab-summary.txt"
      done ;;
    decode)
      for round in 1 2; do for side in a b; do
        run $side decode$round 150 bench-gpu $dummy --batch 2 -p 512 -n 256 -r 3
        grep -E "^\|.*(pp|tg)" "$logs/$side-decode$round.log" | sed "s/^/$side /" >> "$out/ab-summary.txt"
      done; done ;;
    *) echo "unknown step: $s"; status=1 ;;
  esac
done
tar czf "$out/ab-logs.tgz" -C "$(dirname "$logs")" "$(basename "$logs")"
exit $status
