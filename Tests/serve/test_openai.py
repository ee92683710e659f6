"""`kiln serve` against the official `openai` Python client (run by scripts/serve-test.sh, which starts the servers).

Environment: KILN_SERVE_URL (the main server: --max-sequences 16, --context 1024), KILN_BUSY_URL (a server with one
running sequence, one waiting and --api-key KILN_BUSY_KEY), KILN_BIN (the kiln binary, for `kiln tokenize`),
KILN_MODEL (the model file). Expected values come from the tokenizer (`kiln tokenize`), from requests run alone, or from
the OpenAI API's documented shapes, never from the response under test itself.
"""
import concurrent.futures as futures
import json
import os
import re
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

import openai

URL = os.environ["KILN_SERVE_URL"]
BUSY_URL = os.environ["KILN_BUSY_URL"]
BUSY_KEY = os.environ["KILN_BUSY_KEY"]
KILN = os.environ["KILN_BIN"]
MODEL_PATH = os.environ["KILN_MODEL"]
MODEL = os.path.splitext(os.path.basename(MODEL_PATH))[0]
CONTEXT = 1024

client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=120)


def token_count(text, special=False):
    """Tokens `kiln tokenize` counts for `text` (BOS added as the model asks, as the server does for completions)."""
    args = [KILN, "tokenize", "-m", MODEL_PATH, "--ids"] + (["--special"] if special else []) + [text]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout
    return len(out.split())


def raw(method, path, body=None, headers=None, base=URL):
    """(status, headers, parsed JSON or text) of a plain HTTP request, for what the client library would refuse to send."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, hdrs, text = r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, dict(e.headers), e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def metrics():
    """The server's Prometheus samples without labels, name → value."""
    _, _, text = raw("GET", "/metrics")
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+) ([-0-9.e+]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def wait_idle(timeout=20):
    """Waits until no request runs or waits and every KV block is free; returns the last metrics."""
    deadline = time.time() + timeout
    while True:
        m = metrics()
        if m.get("kiln_requests_running") == 0 and m.get("kiln_requests_waiting") == 0 and m.get("kiln_kv_blocks_used") == 0:
            return m
        if time.time() > deadline:
            return m
        time.sleep(0.1)


def chat(content, **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kw)


def complete(prompt, **kw):
    return client.completions.create(model=MODEL, prompt=prompt, **kw)


def stream_text(prompt, **kw):
    """Text, finish reason and usage of a streamed completion."""
    text, finish, usage = "", None, None
    for chunk in complete(prompt, stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.text
            finish = c.finish_reason or finish
    return text, finish, usage


PROMPTS = [
    "Hi",
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "Name the three primary colours of light, please:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Water boils at a temperature of",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. Then the fox",
    "In 1969, the first humans landed on",
]


class Basics(unittest.TestCase):
    def test_models_health_and_metrics(self):
        models = client.models.list()
        self.assertEqual([m.id for m in models.data], [MODEL])
        self.assertEqual(raw("GET", "/health")[0], 200)
        _, hdrs, text = raw("GET", "/metrics")
        for name in ["kiln_requests_total", "kiln_prompt_tokens_total", "kiln_generation_tokens_total", "kiln_time_to_first_token_seconds_bucket",
                     "kiln_inter_token_latency_seconds_bucket", "kiln_requests_waiting", "kiln_requests_running", "kiln_kv_blocks_used",
                     "kiln_kv_blocks_free", "kiln_kv_blocks_cached", "kiln_prefix_cache_hits_total"]:
            self.assertIn(name, text)

    def test_chat_completion_and_usage_equal_to_the_tokenizer(self):
        system, user = "You answer in one word.", "What colour is the sky?"
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                                           max_tokens=8, temperature=0)
        self.assertEqual(r.object, "chat.completion")
        self.assertTrue(r.id.startswith("chatcmpl-"))
        self.assertEqual(r.model, MODEL)
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertTrue(r.choices[0].message.content)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        # SmolLM2's template is ChatML; written out by hand here.
        rendered = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        self.assertEqual(r.usage.prompt_tokens, token_count(rendered, special=True))
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_text_parts_are_the_same_as_a_string(self):
        a = chat("Say hello.", max_tokens=6, temperature=0)
        b = client.chat.completions.create(model=MODEL, max_tokens=6, temperature=0, messages=[
            {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}])
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)
        self.assertEqual(a.usage.prompt_tokens, b.usage.prompt_tokens)

    def test_completion_max_tokens_and_usage(self):
        prompt = "The capital of France is"
        r = complete(prompt, max_tokens=5, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 5)
        self.assertEqual(r.usage.prompt_tokens, token_count(prompt))
        huge = complete("Hi", max_tokens=2**63 - 1, temperature=0, stream=True)
        self.assertIsNotNone(next(iter(huge)), "a max_tokens beyond the context is clamped to it")
        huge.close()

    def test_streamed_equals_not_streamed_and_ends_with_usage_and_done(self):
        prompt = "Once upon a time, in a small village by the sea,"
        whole = complete(prompt, max_tokens=20, temperature=0)
        text, finish, usage = stream_text(prompt, max_tokens=20, temperature=0, stream_options={"include_usage": True})
        self.assertEqual(text, whole.choices[0].text)
        self.assertEqual(finish, whole.choices[0].finish_reason)
        self.assertEqual((usage.prompt_tokens, usage.completion_tokens), (whole.usage.prompt_tokens, whole.usage.completion_tokens))
        # The wire format: every event is `data: {...}`, the last `data: [DONE]`; chat starts with the role.
        req = urllib.request.Request(URL + "/v1/chat/completions", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            self.assertTrue(r.headers["Content-Type"].startswith("text/event-stream"))
            events = [e for e in r.read().decode().split("\n\n") if e]
        self.assertEqual(events[-1], "data: [DONE]")
        chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
        self.assertEqual(chunks[0]["choices"][0]["delta"].get("role"), "assistant")
        self.assertTrue(all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks))
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        self.assertNotIn("usage", chunks[0], "no usage without stream_options.include_usage")

    def test_multibyte_characters_split_across_tokens_stream_whole(self):
        # Byte-level BPE splits 日 and emoji over several tokens; the stream must never send half a character.
        messages = [{"role": "user", "content": "Repeat exactly: 日本語 café 🙂🙂"}]
        whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, temperature=0, logprobs=True)
        text = whole.choices[0].message.content
        self.assertEqual(whole.choices[0].finish_reason, "stop", text)
        split = [t for t in whole.choices[0].logprobs.content if t.bytes and not bytes(t.bytes).decode(errors="ignore")]
        self.assertTrue(split, f"some token should hold only part of a character: {text!r}")
        chunks = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=40, temperature=0, stream=True) if c.choices]
        self.assertEqual("".join(chunks), text)
        self.assertIn("本", text)
        for c in chunks:
            self.assertNotIn("\ufffd", c)

    def test_stop_strings(self):
        prompt = "Name the three primary colours of light, please:"
        full = complete(prompt, max_tokens=24, temperature=0).choices[0].text
        words = full.split()
        self.assertGreater(len(words), 3, full)
        stop = words[2]
        expected = full[:full.index(stop)]
        r = complete(prompt, max_tokens=24, temperature=0, stop=[stop, "never-generated-zzz"])
        self.assertEqual(r.choices[0].text, expected)
        self.assertEqual(r.choices[0].finish_reason, "stop")
        text, finish, _ = stream_text(prompt, max_tokens=24, temperature=0, stop=stop)
        self.assertEqual((text, finish), (expected, "stop"))

    def test_seed_reproducibility(self):
        kw = dict(max_tokens=20, temperature=1.0, top_p=0.95)
        a = complete("Once upon a time", seed=1234, **kw).choices[0].text
        b = complete("Once upon a time", seed=1234, **kw).choices[0].text
        self.assertEqual(a, b)
        others = {complete("Once upon a time", seed=s, **kw).choices[0].text for s in (1, 2, 3)}
        self.assertGreater(len(others | {a}), 1, "different seeds should draw differently")

    def test_logprobs(self):
        r = chat("Count to five.", max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens if r.choices[0].finish_reason == "length" else len(content))
        self.assertEqual("".join(c.token for c in content), r.choices[0].message.content)
        for c in content:
            self.assertLessEqual(c.logprob, 0)
            self.assertEqual(len(c.top_logprobs), 3)
            self.assertEqual(c.top_logprobs[0].token, c.token, "greedy chooses the most likely token")
            lps = [t.logprob for t in c.top_logprobs]
            self.assertEqual(lps, sorted(lps, reverse=True))
            self.assertEqual(bytes(c.bytes).decode(errors="replace"), c.token)
        r = complete("The capital of France is", max_tokens=4, temperature=0, logprobs=2)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 4)
        self.assertEqual("".join(lp.tokens), r.choices[0].text)
        self.assertEqual(lp.text_offset[0], 0)
        self.assertTrue(all(len(t) == 2 for t in lp.top_logprobs))
        self.assertIsNone(complete("Hi", max_tokens=2).choices[0].logprobs)


class Concurrency(unittest.TestCase):
    def test_greedy_alone_equals_batched_with_seven_others(self):
        alone = [complete(p, max_tokens=12, temperature=0).choices[0].text for p in PROMPTS]
        with futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
            batched = list(pool.map(lambda p: complete(p, max_tokens=12, temperature=0).choices[0].text, PROMPTS))
        self.assertEqual(batched, alone)

    def test_sixteen_concurrent_streaming_clients(self):
        prompts = [f"{p} ({i})" for i, p in enumerate(PROMPTS * 2)]
        expected = [complete(p, max_tokens=16, temperature=0).choices[0].text for p in prompts]
        with futures.ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda p: stream_text(p, max_tokens=16, temperature=0, stream_options={"include_usage": True}), prompts))
        for p, e, (text, finish, usage) in zip(prompts, expected, got):
            self.assertEqual(text, e, p)
            self.assertIn(finish, ("stop", "length"))
            self.assertEqual(usage.completion_tokens, 16 if finish == "length" else usage.completion_tokens)
        self.assertEqual(wait_idle()["kiln_kv_blocks_used"], 0)

    def test_a_client_disconnecting_mid_stream_frees_its_blocks(self):
        before = metrics()["kiln_kv_blocks_free"]
        # 900 tokens take far longer than the 10 s allowed below: only a cancelled request frees its blocks in time.
        stream = complete("Once upon a time, in a small village by the sea,", max_tokens=900, temperature=0.8, stream=True)
        received = 0
        for chunk in stream:
            received += 1
            if received == 3:
                break
        self.assertGreater(metrics()["kiln_kv_blocks_used"], 0, "the request should still be running")
        stream.close()
        m = wait_idle(timeout=10)
        self.assertEqual(m["kiln_kv_blocks_used"], 0)
        self.assertEqual(m["kiln_kv_blocks_free"], before)
        self.assertEqual(complete("Hi", max_tokens=2).choices[0].finish_reason, "length", "the server keeps serving")

    def test_a_client_giving_up_on_a_non_streamed_request_cancels_it(self):
        impatient = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=1.5)
        with self.assertRaises(openai.APITimeoutError):
            impatient.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=900, extra_body={"ignore_eos": True})
        m = wait_idle(timeout=10)
        self.assertEqual((m["kiln_requests_running"], m["kiln_kv_blocks_used"]), (0, 0))

    def test_a_burst_beyond_the_queue_gets_429_and_the_server_keeps_serving(self):
        busy = openai.OpenAI(base_url=BUSY_URL + "/v1", api_key=BUSY_KEY, max_retries=0, timeout=120)
        def one(i):
            try:
                busy.completions.create(model=MODEL, prompt=f"Story number {i}:", max_tokens=24, temperature=0)
                return "ok"
            except openai.RateLimitError as e:
                self.assertEqual(e.response.headers.get("retry-after"), "1")
                self.assertEqual(e.body["code"], "rate_limit_exceeded")
                return "429"
        with futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(12)))
        self.assertGreater(results.count("429"), 0, results)
        self.assertGreater(results.count("ok"), 0, results)
        self.assertEqual(busy.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices[0].finish_reason, "length")


class PrefixCache(unittest.TestCase):
    def test_a_second_request_sharing_a_long_prefix_hits_the_cache_and_answers_the_same(self):
        # A prefix of some 600 tokens that no other test sends, so the first request below finds nothing cached.
        colours, things = ["red", "green", "blue", "amber", "violet", "grey", "white"], ["lamp", "chair", "kettle", "drum", "boat", "clock", "glove", "map", "bell", "coat", "kite"]
        prefix = "Inventory of the old theatre's storeroom. " + " ".join(
            f"Shelf {i} holds a {colours[i % 7]} {things[(3 * i) % 11]} and {i % 5 + 2} spare parts." for i in range(48))
        first, second = prefix + " Question: which shelf holds the first kettle?", prefix + " Question: what colour is the boat on shelf 4?"
        prefix_tokens = token_count(prefix)
        self.assertGreater(prefix_tokens, 500)
        wait_idle()

        def timed(prompt):
            """Greedy streamed text and the time to its first chunk."""
            start, ttft, text = time.time(), None, ""
            for chunk in complete(prompt, max_tokens=12, temperature=0, stream=True):
                ttft = ttft or time.time() - start
                text += "".join(c.text for c in chunk.choices)
            return text, ttft

        hits0 = metrics()["kiln_prefix_cache_hits_total"]
        cold, cold_ttft = timed(second)
        hits1 = metrics()["kiln_prefix_cache_hits_total"]
        self.assertEqual(hits1, hits0, "nothing should be cached for a new prefix")
        timed(first)
        hits2 = metrics()["kiln_prefix_cache_hits_total"]
        # Every full 16-token block of the common prefix except the last (its tokens may merge with what follows).
        self.assertGreaterEqual(hits2 - hits1, prefix_tokens // 16 - 1)
        warm, warm_ttft = timed(second)
        self.assertGreaterEqual(metrics()["kiln_prefix_cache_hits_total"] - hits2, prefix_tokens // 16 - 1)
        self.assertEqual(warm, cold, "a cached prefix must not change the greedy text")
        m = wait_idle()
        self.assertEqual(m["kiln_kv_blocks_used"], 0)
        self.assertGreater(m["kiln_kv_blocks_cached"], prefix_tokens // 16 - 1)
        print(f"\nprefix cache: {prefix_tokens}-token prefix, time to first token {cold_ttft * 1000:.0f} ms cold, "
              f"{warm_ttft * 1000:.0f} ms with the prefix cached", flush=True)


class Errors(unittest.TestCase):
    def check(self, status, body, param=None, path="/v1/chat/completions", headers=None, base=URL):
        got, hdrs, err = raw("POST", path, body, headers, base)
        self.assertEqual(got, status, err)
        self.assertEqual(set(err["error"].keys()), {"message", "type", "param", "code"}, err)
        self.assertTrue(err["error"]["message"])
        if param:
            self.assertEqual(err["error"]["param"], param, err)
        return err["error"]

    def test_malformed_requests(self):
        msgs = [{"role": "user", "content": "Hi"}]
        self.check(400, b'{"messages": [')
        self.check(400, {"messages": "Hi"}, "messages")
        self.check(400, {"messages": msgs, "max_tokens": "ten"}, "max_tokens")
        self.check(400, {"messages": msgs, "max_tokens": -5}, "max_tokens")
        self.check(400, {"messages": msgs, "temperature": -1}, "temperature")
        self.check(400, {"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools")
        self.check(400, {"messages": msgs, "n": 2}, "n")
        self.check(400, {"messages": []}, "messages")
        self.check(400, {"prompt": 5}, "prompt", path="/v1/completions")
        self.check(404, {"model": "gpt-4o", "messages": msgs}, "model")
        e = self.check(413, b'{"prompt": "' + b"a" * (10 << 20) + b'"}', path="/v1/completions")
        self.assertIn("bytes", e["message"])
        e = self.check(400, {"prompt": "hello " * (CONTEXT + 100), "max_tokens": 1}, path="/v1/completions")
        self.assertIn(str(CONTEXT), e["message"])
        self.assertRegex(e["message"], r"\b1[01]\d\d\b", "the prompt's own length is named too")
        # The server still answers after all that.
        self.assertEqual(chat("Hi", max_tokens=2).usage.completion_tokens, 2)

    def test_unknown_fields_are_ignored(self):
        status, _, r = raw("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
                                                            "user": "me", "store": False, "metadata": {"a": "b"}, "kiln_whatever": 1})
        self.assertEqual(status, 200, r)
        self.assertEqual(r["usage"]["completion_tokens"], 2)

    def test_api_keys(self):
        body = {"prompt": "Hi", "max_tokens": 1}
        self.check(401, body, path="/v1/completions", base=BUSY_URL)
        self.check(401, body, path="/v1/completions", headers={"Authorization": "Bearer wrong"}, base=BUSY_URL)
        status, _, _ = raw("POST", "/v1/completions", body, {"Authorization": f"Bearer {BUSY_KEY}"}, BUSY_URL)
        self.assertEqual(status, 200)
        self.assertEqual(raw("GET", "/health", base=BUSY_URL)[0], 200, "health needs no key")


if __name__ == "__main__":
    unittest.main(verbosity=2)
