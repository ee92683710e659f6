#!/usr/bin/env bash
# `kiln serve` end to end with the official `openai` Python client (Tests/serve/test_openai.py), on loopback, CPU only.
# Makes a venv with openai from PyPI under $KILN_HOME (default ~/.cache/kiln) once; starts two servers on free ports
# (the main one, and a small busy one with an API key for the 429 and 401 tests); checks that SIGTERM during a
# request exits 0 within the shutdown deadline. Servers are killed on exit; every wait has a timeout.
# KILN_BIN picks the binary (default: .build/release/kiln if built, else .build/debug/kiln). Arguments name test classes
# or methods to run (`scripts/serve-test.sh Errors`), all by default.
set -euo pipefail
cd "$(dirname "$0")/.."
home="${KILN_HOME:-$HOME/.cache/kiln}"
kiln="${KILN_BIN:-}"
if [ -z "$kiln" ]; then
  if [ -x .build/release/kiln ]; then kiln=.build/release/kiln; else kiln=.build/debug/kiln; fi
fi
kiln="$(cd "$(dirname "$kiln")" && pwd)/$(basename "$kiln")"
model="$home/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || "$kiln" info > /dev/null   # fetches the default model once
venv="$home/serve-venv"
if [ ! -f "$venv/.complete" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check openai==3.63.0
  touch "$venv/.complete"
fi

logs="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$logs"
}
trap cleanup EXIT

free_port() { "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_healthy() {  # url log
  for _ in $(seq 1 300); do
    if curl -sf "$1/health" > /dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "serve-test: the server at $1 did not come up; its log:" >&2; cat "$2" >&2; return 1
}

main_port=$(free_port); busy_port=$(free_port)
key="kiln-test-key"
"$kiln" serve -m "$model" --port "$main_port" --context 1024 --max-sequences 16 --max-waiting 64 > "$logs/main.log" 2>&1 &
pids+=($!); main_pid=$!
"$kiln" serve -m "$model" --port "$busy_port" --context 256 --max-sequences 1 --max-waiting 1 --api-key "$key" --shutdown-timeout 2 \
  > "$logs/busy.log" 2>&1 &
pids+=($!); busy_pid=$!
wait_healthy "http://127.0.0.1:$main_port" "$logs/main.log"
wait_healthy "http://127.0.0.1:$busy_port" "$logs/busy.log"

status=0
KILN_SERVE_URL="http://127.0.0.1:$main_port" KILN_BUSY_URL="http://127.0.0.1:$busy_port" KILN_BUSY_KEY="$key" KILN_BIN="$kiln" \
  KILN_MODEL="$model" timeout 1200 "$venv/bin/python" Tests/serve/test_openai.py "$@" || status=$?
if [ $status -ne 0 ]; then
  echo "serve-test: the Python tests failed ($status); main server log:" >&2; tail -50 "$logs/main.log" >&2
fi

# kiln bench serve against the main server: every request completes, and the report has its fields.
if ! "$kiln" bench serve --url "http://127.0.0.1:$main_port" --concurrency 2 --requests 4 --prompt-tokens 8-16 --output-tokens 4 -o json \
    > "$logs/bench.json" 2> "$logs/bench.err" \
  || ! "$venv/bin/python" -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["completed"] == 4 and r["failed"] == 0 and r["output_tokens_per_second"] > 0 and r["ttft_ms"]["p99"] >= r["ttft_ms"]["p50"] > 0, r' "$logs/bench.json"; then
  echo "serve-test: kiln bench serve failed:" >&2; cat "$logs/bench.json" "$logs/bench.err" >&2; status=1
else
  echo "serve-test: kiln bench serve: $(cat "$logs/bench.json")"
fi

# SIGTERM while a request streams: the busy server (2 s deadline) must cancel it and exit 0.
curl -sN --max-time 60 -H "Authorization: Bearer $key" "http://127.0.0.1:$busy_port/v1/completions" \
  -d '{"prompt": "Once upon a time", "max_tokens": 200, "stream": true}' > "$logs/stream.txt" 2>&1 &
curl_pid=$!
for _ in $(seq 1 100); do grep -q '"text"' "$logs/stream.txt" 2> /dev/null && break; sleep 0.1; done
kill -TERM "$busy_pid"
started=$(date +%s)
code=0
timeout 20 tail --pid="$busy_pid" -f /dev/null || { echo "serve-test: the server did not exit within 20 s of SIGTERM" >&2; status=1; }
wait "$busy_pid" || code=$?
wait "$curl_pid" || true
if [ $code -ne 0 ]; then echo "serve-test: SIGTERM: the server exited $code, not 0; its log:" >&2; tail -20 "$logs/busy.log" >&2; status=1; fi
grep -q 'data: \[DONE\]' "$logs/stream.txt" || { echo "serve-test: the stream cut by SIGTERM did not end with [DONE]" >&2; status=1; }
echo "serve-test: SIGTERM during a request: exit $code after $(( $(date +%s) - started )) s"

kill -INT "$main_pid"
code=0
timeout 20 tail --pid="$main_pid" -f /dev/null || status=1
wait "$main_pid" || code=$?
[ $code -eq 0 ] || { echo "serve-test: SIGINT: the server exited $code" >&2; status=1; }
[ $status -eq 0 ] && echo "serve-test: passed"
exit $status
