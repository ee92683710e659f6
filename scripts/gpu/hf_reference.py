"""Random-weight Hugging Face checkpoints at full Llama-3-8B width (2 layers), a Granite one and a Qwen3 one at
Qwen3-4B width (q/k norms; head_dim 128 while hidden / heads = 80, tied embeddings), and
transformers' teacher-forced logits for a fixed 64-token sequence (runs on the GPU machine).

Writes, under --out DIR:
  tokens.txt                      64 token ids
  llama/   (config.json + model.safetensors)   ref_logits.f32  raw fp32 [64, vocab]
  granite/ (same)                               ref_logits.f32
  qwen3/   (same)                               ref_logits.f32
The reference runs in fp32 on the bf16-rounded weights (the exact function the checkpoint
defines), so Kiln's bf16 engine is judged against the truth, not against another bf16 rounding."""
import argparse, os, sys
import numpy as np, torch
from transformers import LlamaConfig, LlamaForCausalLM
from hf_common import randomize   # scripts/gpu/, beside this file

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--tokens", type=int, default=64)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.manual_seed(0)

def build(kind):
    common = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=a.layers, num_attention_heads=32,
                  num_key_value_heads=8, rms_norm_eps=1e-5, max_position_embeddings=131072, torch_dtype="bfloat16")
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8192}, **common)
        return LlamaForCausalLM(cfg)
    if kind == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM
        cfg = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=a.layers,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
                          max_position_embeddings=40960, tie_word_embeddings=True, attention_bias=False, torch_dtype="bfloat16")
        return Qwen3ForCausalLM(cfg)
    from transformers import GraniteConfig, GraniteForCausalLM
    cfg = GraniteConfig(vocab_size=49155, rope_theta=10000000.0, tie_word_embeddings=True, embedding_multiplier=12.0,
                        residual_multiplier=0.22, logits_scaling=16.0, attention_multiplier=0.0078125, **common)
    return GraniteForCausalLM(cfg)

g = torch.Generator().manual_seed(1)
tokens = None
for kind in ["llama", "granite", "qwen3"]:
    d = os.path.join(a.out, kind)
    with torch.device("cuda"):
        m = build(kind).to(torch.bfloat16)
    randomize(m)
    m.save_pretrained(d, safe_serialization=True)
    # transformers 5 writes rope_theta/rope_scaling inside "rope_parameters"; Kiln's HFConfig (today) reads the
    # classic top-level keys, so write those too (same values) — otherwise Kiln silently uses theta 10000.
    import json
    cp = os.path.join(d, "config.json"); cj = json.load(open(cp))
    rp = cj.get("rope_parameters") or {}
    cj.setdefault("rope_theta", rp.get("rope_theta", {"llama": 500000.0, "granite": 10000000.0, "qwen3": 1000000.0}[kind]))
    if kind == "llama":
        cj.setdefault("rope_scaling", {k: v for k, v in rp.items() if k != "rope_theta"} if rp.get("rope_type") == "llama3" else
                      {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    json.dump(cj, open(cp, "w"), indent=1)
    print(kind, "rope:", cj.get("rope_theta"), cj.get("rope_scaling"), "rope_parameters:", rp, flush=True)
    vocab = m.config.vocab_size
    if tokens is None:
        tokens = torch.randint(0, 49155, (a.tokens,), generator=g)   # valid for both vocabularies
        with open(os.path.join(a.out, "tokens.txt"), "w") as f:
            f.write(" ".join(str(int(t)) for t in tokens) + "\n")
    m = m.float().eval()
    m.config._attn_implementation = "eager"
    with torch.no_grad():
        logits = m(tokens[None].cuda()).logits[0].float().cpu().numpy()
    logits.astype(np.float32).tofile(os.path.join(d, "ref_logits.f32"))
    print(f"{kind}: {d} vocab {vocab}, logits {logits.shape}, std {logits.std():.3f}", flush=True)
    del m
    torch.cuda.empty_cache()
