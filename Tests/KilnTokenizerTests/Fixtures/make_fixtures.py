#!/usr/bin/env python3
"""Generates the tokenizer.json fixtures of KilnTokenizerTests and the ids the Hugging Face `tokenizers`
library gives for a set of test strings (the expected values of TokenizerJSONTests).

    pip install tokenizers==0.23.3 && python3 Tests/KilnTokenizerTests/Fixtures/make_fixtures.py

Two tiny byte-level BPE tokenizers are trained on the Apache-2.0 licence text (Debian base-files):
  tiny-llama3.json:    Split(Llama 3 regex, Isolated) + ByteLevel(use_regex=False), ignore_merges, BOS template,
                       a special token and a non-special (user-defined) added token.
  tiny-starcoder.json: NFC normalizer, Digits(individual_digits) + ByteLevel(use_regex=True).

random-unicode.expected.json: random strings of awkward characters (combining marks, ZWJ, NBSP and other Unicode
spaces, digits of other scripts, contractions in both cases) with the ids the `tokenizers` library gives for the
llama-bpe, qwen2 and starcoder vocabularies of llama.cpp's conformance files (read from
$KILN_HOME/testdata/vocab, see scripts/fetch-test-data.sh), rebuilt as Hugging Face BPE models.
"""
import json, os, random, struct
from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers, processors, normalizers, AddedToken

here = os.path.dirname(os.path.abspath(__file__))
corpus = open("/usr/share/common-licenses/Apache-2.0", encoding="utf-8").read().split("\n")
corpus += ["Äpfel und Birnen kosten 1234 Euro.", "нещо на Български", "我想在apple工作1314151天", "🦙 llamas 🚀"] * 3

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

def train(tok, vocab_size):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)

llama = Tokenizer(models.BPE(ignore_merges=True))
llama.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
llama.decoder = decoders.ByteLevel()
train(llama, 1000)
llama.add_special_tokens(["<|begin_of_text|>", "<|eot|>"])
llama.add_tokens([AddedToken("<user_tok>", special=False, normalized=False)])
bos = llama.token_to_id("<|begin_of_text|>")
llama.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])

star = Tokenizer(models.BPE())
star.normalizer = normalizers.NFC()
star.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
star.decoder = decoders.ByteLevel()
train(star, 800)
star.add_special_tokens(["<|endoftext|>"])

texts = [
    "Hello world", " Hello World!", "Licensed under the Apache License, Version 2.0 (the \"License\");",
    "you may not use this file except in compliance with the License.\n\n   http://www.apache.org/licenses/LICENSE-2.0\n",
    "It's, they're, we've, I'm, you'll, he'd; IT'S DON'T", "3 33 333 3333 33333 1234567", "   leading and trailing   ",
    "\t tabs\t\n\r\n mixed \u00a0nbsp", "Äpfel Ä\u0308pfel", "нещо на Български", "我想在apple工作1314151天～", "🦙🚀 emoji 😶‍🌫️",
    "<|begin_of_text|>Hi<|eot|> <user_tok> there<user_tok>", "<|endoftext|>a<|endoftext|>", "", " ", "\n\n\n", "x  \n  y",
]

def cases(tok):
    out = []
    for t in texts:
        enc = tok.encode(t, add_special_tokens=False)
        out.append({"text": t, "ids": enc.ids, "decoded": tok.decode(enc.ids, skip_special_tokens=True)})
    return out

for name, tok in [("tiny-llama3", llama), ("tiny-starcoder", star)]:
    tok.save(os.path.join(here, name + ".json"))
    expected = {"cases": cases(tok)}
    if name == "tiny-llama3":
        expected["with_special"] = {"text": "Hello world", "ids": tok.encode("Hello world").ids}
    with open(os.path.join(here, name + ".expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)


# --- random-unicode.expected.json --------------------------------------------------------------------------------

def gguf_metadata(path):
    data = open(path, "rb").read()
    off = 0
    def rd(fmt):
        nonlocal off
        v = struct.unpack_from(fmt, data, off); off += struct.calcsize(fmt); return v[0]
    def rs():
        nonlocal off
        n = rd("<Q"); s = data[off:off + n]; off += n; return s.decode("utf-8", "replace")
    fixed = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    def value(t):
        if t in fixed: return rd(fixed[t])
        if t == 8: return rs()
        et = rd("<I"); n = rd("<Q"); return [value(et) for _ in range(n)]
    assert rd("<I") == 0x46554747; rd("<I"); rd("<Q"); n_kv = rd("<Q")
    meta = {}
    for _ in range(n_kv):
        k = rs(); meta[k] = value(rd("<I"))
    return meta

QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
def from_gguf(name):
    home = os.environ.get("KILN_HOME") or os.path.expanduser("~/.cache/kiln")
    m = gguf_metadata(f"{home}/testdata/vocab/ggml-vocab-{name}.gguf")
    vocab = {t: i for i, t in enumerate(m["tokenizer.ggml.tokens"])}
    merges = [tuple(x.split(" ", 1)) for x in m["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=(name == "llama-bpe")))
    if name in ("llama-bpe", "qwen2"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3 if name == "llama-bpe" else QWEN2), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok

random.seed(7)
pool = list("aZé Ä\u0308ß'sS'T'RE'll'Ve\t\n\r \u00a0\u2003\u3000,.!?;:()[]{}\"-—_/\\0123456789٣४①½Ⅻ") + [
    "🦙", "😶‍🌫️", "你好", "нещо", "ก่", "\u200d", "\ufeff", "\u0301", "ﬁ", "\x0b", "\x0c", "\x85", "\u2028"]
strings = ["".join(random.choice(pool) for _ in range(random.randint(1, 40))) for _ in range(300)]
result = {"texts": strings}
for name in ("llama-bpe", "qwen2", "starcoder"):
    tok = from_gguf(name)
    result[name] = [tok.encode(t, add_special_tokens=False).ids for t in strings]
with open(os.path.join(here, "random-unicode.expected.json"), "w", encoding="utf-8") as f:
    # ASCII escapes: Foundation's JSON parser drops raw U+FEFF characters.
    json.dump(result, f, ensure_ascii=True, separators=(",", ":"))
