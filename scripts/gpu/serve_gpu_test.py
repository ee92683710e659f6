#!/usr/bin/env python3
"""`kiln serve --device cuda` end to end on the GPU machine (issue 21), where nothing can be downloaded: a tiny random
Llama checkpoint (numpy + safetensors) with a byte-level BPE tokenizer trained here (the `tokenizers` package, a
transformers dependency) and a chat template, served by the kiln binary; a urllib client checks what the CPU's scripts/serve-test.sh checks with the
`openai` package, plus what only the GPU engine does (paged cache, graphs per batch bucket, device sampling):

  - /health, /v1/models; completions and chat, streamed and not; usage counts equal the tokenizer's;
  - greedy output of a request alone equals its output among 15 concurrent others, up to the first step whose
    top-1/top-2 log-probability gap is below 0.05 (where a different batch size may pick the other token);
  - seeded sampling is reproducible; logprobs come back with top_logprobs entries;
  - a client that disconnects mid-stream: afterwards /metrics shows no KV blocks in use;
  - malformed requests get 400 and an OpenAI error body.

    python3 scripts/gpu/serve_gpu_test.py --kiln /tmp/kiln [--port 18080]
Prints one line per check and exits 1 when any failed.
"""
import argparse, concurrent.futures as futures, json, os, re, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request

p = argparse.ArgumentParser()
p.add_argument("--kiln", default="/tmp/kiln")
p.add_argument("--port", type=int, default=18080)
p.add_argument("--dir", default=None, help="where the checkpoint goes (default: a temporary folder)")
p.add_argument("--device", default="cuda", help="cuda (the point) or cpu (to try the script without a GPU)")
a = p.parse_args()

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

folder = a.dir or tempfile.mkdtemp(prefix="kiln-serve-gpu-")
os.makedirs(folder, exist_ok=True)
text = [open(f, errors="ignore").read() for f in ["/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0"] if os.path.exists(f)]
text = text or ["the quick brown fox jumps over the lazy dog " * 200]
specials = ["<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=1024, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save(os.path.join(folder, "tokenizer.json"))
template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
json.dump({"bos_token": "<|begin|>", "eos_token": "<|end|>", "add_bos_token": True, "chat_template": template,
           "tokenizer_class": "PreTrainedTokenizerFast"}, open(os.path.join(folder, "tokenizer_config.json"), "w"))
# Random weights (σ 0.02, norms 1 ± 0.1) written with numpy, so the script needs no torch: f32 tensors, which Kiln
# converts at load.
V, H, F, L, NH, NKV = tok.get_vocab_size(), 256, 512, 2, 4, 2
D = H // NH
rng = np.random.default_rng(0)
w = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)
norm = lambda n: (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
tensors = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": norm(H), "lm_head.weight": w(V, H)}
for i in range(L):
    pre = f"model.layers.{i}."
    tensors.update({pre + "input_layernorm.weight": norm(H), pre + "post_attention_layernorm.weight": norm(H),
                    pre + "self_attn.q_proj.weight": w(NH * D, H), pre + "self_attn.k_proj.weight": w(NKV * D, H),
                    pre + "self_attn.v_proj.weight": w(NKV * D, H), pre + "self_attn.o_proj.weight": w(H, NH * D),
                    pre + "mlp.gate_proj.weight": w(F, H), pre + "mlp.up_proj.weight": w(F, H), pre + "mlp.down_proj.weight": w(H, F)})
save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": H, "intermediate_size": F,
           "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV, "max_position_embeddings": 2048,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32",
           "bos_token_id": tok.token_to_id("<|begin|>"), "eos_token_id": tok.token_to_id("<|end|>")},
          open(os.path.join(folder, "config.json"), "w"))
print(f"checkpoint: {folder}, vocab {V}", flush=True)

url = f"http://127.0.0.1:{a.port}"
log = open(os.path.join(folder, "serve.log"), "w")
server = subprocess.Popen([a.kiln, "serve", "--device", a.device, "-m", folder, "--port", str(a.port), "--max-sequences", "16",
                           "--context", "1024", "--token-budget", "512"], stdout=log, stderr=subprocess.STDOUT)
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)
    if not ok:
        failures.append(name)


def call(path, body=None, method=None, stream=False, timeout=120):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    if stream:
        return r.status, r
    return r.status, r.read().decode()


def metrics():
    _, t = call("/metrics")
    return {m.group(1): float(m.group(2)) for m in (re.match(r"^([a-z_]+) ([-0-9.e+]+)$", l) for l in t.splitlines()) if m}


try:
    for _ in range(300):   # start-up: load, compile kernels, size the pool
        if server.poll() is not None:
            raise SystemExit("the server exited:\n" + open(os.path.join(folder, "serve.log")).read()[-3000:])
        try:
            if call("/health", timeout=2)[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        time.sleep(1)
    check("health", call("/health")[0] == 200)
    status, body = call("/v1/models")
    check("models", status == 200 and json.loads(body)["data"][0]["object"] == "model", body[:200])

    def complete(prompt, n=12, **extra):
        s, b = call("/v1/completions", {"prompt": prompt, "max_tokens": n, "temperature": 0, "logprobs": 2, **extra})
        if s != 200:
            raise RuntimeError(f"{s}: {b[:300]}")
        return json.loads(b)

    prompts = [" ".join(text[0].split()[i:i + 5 + 7 * i]) for i in range(16)]
    alone = [complete(pr) for pr in prompts]
    r = alone[0]
    want_prompt = len(tok.encode(prompts[0]).ids) + 1   # + BOS
    check("completion usage: prompt tokens = the tokenizer's + BOS", r["usage"]["prompt_tokens"] == want_prompt, f"{r['usage']} vs {want_prompt}")
    check("completion: text, finish reason, logprobs", isinstance(r["choices"][0]["text"], str)
          and r["choices"][0]["finish_reason"] in ("stop", "length") and len(r["choices"][0]["logprobs"]["top_logprobs"][0]) == 2, str(r)[:300])

    def tokens_and_gaps(resp):
        lp = resp["choices"][0]["logprobs"]
        gaps = [sorted(t.values(), reverse=True) for t in lp["top_logprobs"]]
        return lp["tokens"], [g[0] - g[1] if len(g) > 1 else 1e9 for g in gaps]

    def agree(x, y):
        (tx, gx), (ty, gy) = tokens_and_gaps(x), tokens_and_gaps(y)
        for i in range(min(len(tx), len(ty))):
            if gx[i] < 0.05 or gy[i] < 0.05:
                return True
            if tx[i] != ty[i]:
                return False
        return len(tx) == len(ty)

    with futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(complete, prompts))
    bad = [i for i in range(16) if not agree(alone[i], together[i])]
    check("16 concurrent greedy requests equal each alone (up to a gap < 0.05)", not bad, f"prompts {bad}")

    s, b = call("/v1/chat/completions", {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
                                         "max_tokens": 8, "temperature": 0})
    ok = s == 200 and json.loads(b)["choices"][0]["message"]["role"] == "assistant"
    check("chat completion", ok, b[:300])

    seeded = [complete(prompts[3], temperature=0.9, seed=42, top_p=0.9) for _ in range(2)]
    check("seeded sampling is reproducible", seeded[0]["choices"][0]["text"] == seeded[1]["choices"][0]["text"])

    s, r = call("/v1/completions", {"prompt": prompts[5], "max_tokens": 20, "temperature": 0, "stream": True,
                                    "stream_options": {"include_usage": True}}, stream=True)
    lines = [l.decode().strip() for l in r if l.strip()]
    check("streaming ends with [DONE] and usage", s == 200 and lines[-1] == "data: [DONE]" and '"usage"' in lines[-2], str(lines[-3:]))

    s, r = call("/v1/completions", {"prompt": prompts[6], "max_tokens": 400, "temperature": 0, "stream": True, "ignore_eos": True}, stream=True)
    for i, _ in enumerate(r):
        if i > 5:
            break
    r.close()   # disconnect mid-stream
    time.sleep(2)
    m = metrics()
    check("a disconnected stream frees its blocks", m.get("kiln_kv_blocks_used") == 0 and m.get("kiln_requests_running", 0) == 0, str(m))

    chat = "/v1/chat/completions"
    for name, path, body in [("bad JSON", "/v1/completions", b"{nope"), ("negative max_tokens", "/v1/completions", {"prompt": "x", "max_tokens": -1}),
                             ("temperature -1", "/v1/completions", {"prompt": "x", "temperature": -1}),
                             ("tools", chat, {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
                             ("empty messages", chat, {"messages": []})]:
        s, t = call(path, body)
        check(f"400 for {name}", s == 400 and "error" in json.loads(t), f"{s} {t[:200]}")
finally:
    server.terminate()
    try:
        rc = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill(); rc = None
    check("SIGTERM: the server exits 0", rc == 0, f"rc {rc}")
    print(open(os.path.join(folder, "serve.log")).read()[-1500:])
print(f"{len(failures)} failed" + (f": {failures}" if failures else ""))
sys.exit(1 if failures else 0)
