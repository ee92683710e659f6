#!/usr/bin/env bash
# Lookup-table quality table (issue 19, not CI): SmolLM2-135M quantized by `kiln quantize --to lut{2,3,4}` with the
# tables int, nf, fp4 (4-bit only) and learned, groups of 32 and 64, each measured by `kiln perplexity -c 512` (CPU
# engine) on the start of the Apache-2.0 license text; plus llama.cpp's IQ4_NL of the same source, measured by the same
# Kiln command. Prints one markdown table: perplexity and change against the source model.
#
# The source: the only SmolLM2 Kiln fetches is the Q4_1 GGUF, so it is first written as an F32 GGUF by llama.cpp's
# `llama-quantize --allow-requantize … F32` (exact: every Q4_1 value d·q + m and the Q8_0 embeddings are f32 numbers).
# That F32 file is the common source of Kiln's LUT folders and of llama.cpp's IQ4_NL file; the baseline row is it.
# llama-quantize is built once (scripts/llama-cpp-tool.sh) into $KILN_HOME/llama.cpp-build from the llama.cpp source inside the
# llama-cpp-python==0.3.36 source package on PyPI, as scripts/bench-cpu.sh builds llama-bench (the same build tree).
# IQ4_NL keeps token_embd (the tied output layer) in f32, as Kiln's folders keep it in source precision.
#
#   usage: scripts/lut-quality.sh [LINES]   LINES of the license text (default 110: ~1,100 tokens, 2 chunks of 512, the
#          fewest `perplexity -c 512` accepts (2 × context), 510 tokens scored; this keeps the script near 15–25
#          minutes on 2 shared cores; the whole file, 202 lines, gives 4 chunks and doubles each perplexity run)
#   env: KILN (binary; default a release build in SCRATCH), SCRATCH (default .build-release), MODEL (Q4_1 source GGUF),
#        THREADS (default all cores), KILN_HOME
set -euo pipefail
lines="${1:-110}"
home="${KILN_HOME:-$HOME/.cache/kiln}"
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${MODEL:-$home/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
license=/usr/share/common-licenses/Apache-2.0
threads="${THREADS:-$(nproc)}"

llama_quantize=$("$root/scripts/llama-cpp-tool.sh" llama-quantize)   # builds it once; prints its path

kiln="${KILN:-}"
if [ -z "$kiln" ]; then
  scratch="${SCRATCH:-$root/.build-release}"
  (cd "$root" && swift build -c release --product kiln --scratch-path "$scratch" >/dev/null)
  kiln="$scratch/release/kiln"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -n "$lines" "$license" >"$work/text.txt"
"$llama_quantize" --allow-requantize "$model" "$work/source-f32.gguf" F32 >"$work/llama-quantize.log" 2>&1
source="$work/source-f32.gguf"

# perplexity MODEL: the final estimate of `kiln perplexity -c 512` on the text.
perplexity() {
  local ppl
  ppl=$("$kiln" perplexity -m "$1" -f "$work/text.txt" -c 512 -t "$threads" 2>"$work/perplexity.err" \
          | sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p')
  if [ -z "$ppl" ]; then echo "kiln perplexity -m $1 failed:" >&2; tail -n 3 "$work/perplexity.err" >&2; kill $$; fi
  echo "$ppl"
}
results="$work/results.tsv"
start=$(date +%s)
printf 'source (F32 of the Q4_1 GGUF)\t-\t-\t%s\t-\n' "$(perplexity "$source")" >>"$results"
echo "$(tail -n 1 "$results" | tr '\t' ' ')" >&2
for bits in 4 3 2; do
  tables="int nf learned"
  [ "$bits" = 4 ] && tables="int nf fp4 learned"
  for table in $tables; do
    for group in 32 64; do
      out="$work/lut$bits-g$group-$table"
      mean=$("$kiln" quantize -m "$source" --to "lut$bits" --group "$group" --table "$table" -o "$out" 2>/dev/null \
               | sed -n 's/^mean \([0-9.]*\) over.*/\1/p')
      printf 'lut%s\t%s\t%s\t%s\t%s\n' "$bits" "$table" "$group" "$(perplexity "$out")" "$mean" >>"$results"
      rm -rf "$out"
      echo "$(tail -n 1 "$results" | tr '\t' ' ') ($(( $(date +%s) - start )) s)" >&2
    done
  done
  if [ "$bits" = 4 ]; then
    # llama.cpp's IQ4_NL mix (its default for the type: a few early ffn_down in q5_K) and --pure (every layer IQ4_NL,
    # the format against the format).
    for pure in "" --pure; do
      # shellcheck disable=SC2086
      "$llama_quantize" $pure --token-embedding-type f32 --output-tensor-type f32 "$source" "$work/iq4_nl.gguf" IQ4_NL \
        >"$work/llama-quantize-iq4.log" 2>&1
      printf "llama.cpp IQ4_NL%s\tIQ4_NL\t32\t%s\t-\n" "${pure:+ $pure}" "$(perplexity "$work/iq4_nl.gguf")" >>"$results"
      echo "$(tail -n 1 "$results" | tr '\t' ' ') ($(( $(date +%s) - start )) s)" >&2
      rm -f "$work/iq4_nl.gguf"
    done
  fi
done

python3 - "$results" "$lines" "$(( $(date +%s) - start ))" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
base = float(rows[0][3])
print(f"SmolLM2-135M, `kiln perplexity -c 512` (CPU), first {sys.argv[2]} lines of Apache-2.0; {sys.argv[3]} s in all")
print("| format | table | g | perplexity | vs source | mean rel. reconstruction error |")
print("| ------ | ----- | -: | ---------: | --------: | -----------------------------: |")
for fmt, table, g, ppl, err in rows:
    change = "" if fmt.startswith("source") else f"{100 * (float(ppl) / base - 1):+.2f}%"
    print(f"| {fmt} | {table} | {g} | {float(ppl):.4f} | {change} | {err} |")
PY
