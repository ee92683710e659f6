#!/usr/bin/env bash
# CPU speed against llama.cpp (issue 22 item 4); not run in CI.
# Builds llama.cpp's llama-bench once (scripts/llama-cpp-tool.sh) into $KILN_HOME/llama.cpp-build from the llama.cpp source inside the
# llama-cpp-python==0.3.36 source package on PyPI (the package scripts/fetch-test-data.sh already uses; cmake from
# pip when missing), then runs `kiln bench` (release build) and `llama-bench` back to back, alternately, ROUNDS
# times each, both with THREADS threads, for pp128, pp512, tg128, pp2048 and tg128 after a 2,048-token prompt,
# and prints one table of medians and ratios (kiln / llama.cpp).
#   usage: scripts/bench-cpu.sh [ROUNDS] [THREADS]      env: KILN (binary), MODEL (GGUF), SCRATCH (SwiftPM scratch)
set -euo pipefail
rounds="${1:-3}"
threads="${2:-2}"
home="${KILN_HOME:-$HOME/.cache/kiln}"
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${MODEL:-$home/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

llama_bench=$("$root/scripts/llama-cpp-tool.sh" llama-bench)   # builds it once; prints its path

kiln="${KILN:-}"
if [ -z "$kiln" ]; then
  scratch="${SCRATCH:-$root/.build-release}"
  (cd "$root" && swift build -c release --product kiln --scratch-path "$scratch" >/dev/null)
  kiln="$scratch/release/kiln"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Tests: name, kiln options, llama-bench options. Each tool reports its mean over -r 3 runs (after a warm-up).
tests=("pp128|-p 128 -n 0|-p 128 -n 0"
       "pp512|-p 512 -n 0|-p 512 -n 0"
       "tg128|-p 0 -n 128|-p 0 -n 128"
       "pp2048|-p 2048 -n 0|-p 2048 -n 0"
       "tg128@d2048|-p 0 -n 128 -d 2048|-p 0 -n 128 -d 2048")
rate() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["avg_ts"])' "$1"; }
for ((i = 1; i <= rounds; i++)); do
  for t in "${tests[@]}"; do
    IFS='|' read -r name kopts lopts <<<"$t"
    # shellcheck disable=SC2086
    "$kiln" bench -m "$model" $kopts -r 3 -t "$threads" -o json >"$out/k.json" 2>/dev/null
    rate "$out/k.json" >>"$out/kiln-$name"
    # shellcheck disable=SC2086
    "$llama_bench" -m "$model" $lopts -r 3 -t "$threads" -o json >"$out/l.json" 2>/dev/null
    rate "$out/l.json" >>"$out/llama-$name"
  done
done
python3 - "$out" "$rounds" "$threads" "${tests[@]}" <<'PY'
import statistics, sys
out, rounds, threads, tests = sys.argv[1], sys.argv[2], sys.argv[3], [t.split("|")[0] for t in sys.argv[4:]]
print(f"kiln vs llama.cpp, {threads} threads, medians of {rounds} alternating rounds (each the mean of 3 runs), tokens/s")
print("| test | kiln | llama.cpp | ratio | kiln runs | llama.cpp runs |")
print("| ---- | ---: | --------: | ----: | --------- | -------------- |")
for name in tests:
    k = [float(x) for x in open(f"{out}/kiln-{name}")]
    l = [float(x) for x in open(f"{out}/llama-{name}")]
    mk, ml = statistics.median(k), statistics.median(l)
    fmt = lambda xs: " ".join(f"{x:.1f}" for x in xs)
    print(f"| {name} | {mk:.1f} | {ml:.1f} | {mk / ml:.2f} | {fmt(k)} | {fmt(l)} |")
PY
