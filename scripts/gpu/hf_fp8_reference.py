"""transformers' fine-grained FP8 as the reference for Kiln's FP8 engine (runs on the GPU machine; installs nothing).

A random Llama checkpoint at full Llama-3-8B width (hidden 4096, ffn 14336, 32 heads, 8 KV heads, vocab 128256,
llama3 rope scaling; 2 layers unless --layers) is saved in bf16, then loaded by transformers with
`FineGrainedFP8Config(weight_block_size=[128, 128])`, which quantizes every linear layer of the decoder at load
(e4m3 codes with one f32 `weight_scale_inv` per 128×128 block: scale_inv = absmax / 448, the dequantized weight is
code × scale_inv) and saved again with `save_pretrained`: the folder Kiln's loader must accept as transformers writes it.
The embeddings and lm_head stay bf16: transformers' default `modules_to_not_convert` holds the output embedding
(lm_head), and embeddings are no nn.Linear, so only q/k/v/o/gate/up/down become FP8.

Writes, under --out DIR:
  tokens.txt                  64 token ids (hf_reference.py's sequence: seed 1, ids below 49155)
  bf16/  config.json + model.safetensors, ref_logits.f32: teacher-forced logits computed in fp32 on the bf16-rounded
         weights (the function the bf16 checkpoint defines, as hf_reference.py computes it), raw little-endian fp32
         [tokens, vocab]
  fp8/   what save_pretrained writes (config.json with quantization_config; *.weight F8_E4M3, *.weight_scale_inv F32
         [ceil(N/128), ceil(K/128)]), and
         hf_fp8_logits.f32   the FP8 model's teacher-forced logits (bf16 activations, W8A8 linear layers with dynamic
                             1×128 activation quantization: s = absmax / 448, code = e4m3(x / s)), same layout
         hf_fp8_backend.txt  which implementation computed them (below)
         w8a8_emulated_logits.f32  the same model with every FP8 linear layer computed by this script's W8A8 emulation
         w8a16_ref_logits.f32      fp32 computation with the weights dequantized exactly (code × scale_inv) and
                                   unquantized activations: the function Kiln's dequantize-to-bf16 prefill path computes

Which FP8 matmul: transformers' FP8Linear runs DeepGEMM or the Triton kernel `kernels-community/finegrained-fp8`, both
fetched from the Hugging Face hub through the `kernels` package (transformers 5.17: integrations/finegrained_fp8.py).
The GPU machine reaches no hub, so where that kernel cannot load, hf_fp8_logits.f32 comes from the emulation: the
same transformers model and its FP8 weights as transformers quantized them, each FP8Linear's forward replaced by the
definition of the product the kernel computes: activations quantized per 1×128 block (s = absmax / 448, e4m3 with
round-to-nearest-even and saturation), both operands dequantized exactly into fp32, the product in fp32 (TF32 off),
the result rounded to the activation dtype (bf16) as the kernel returns it. It differs from the kernel's per-K-block
fp32 accumulation only in the order of fp32 sums. hf_fp8_backend.txt says "transformers" or "emulated" and the
script prints it; where transformers' kernel ran, the script also prints its rel L2 distance to the emulation.

transformers 5.17 quantizes on the fly from an e4m3 cast of each bf16 weight (a double rounding, fixed upstream by
huggingface/transformers PR 48352); the script then gives each FP8Linear what transformers' own Fp8Quantize makes of
the bf16 weight (scale_inv = absmax / 448 per block, code = e4m3(w / scale_inv)) and says how many it replaced;
--no-requantize keeps the double-rounded weights.

Test on a machine without a GPU (nothing on it is Llama-3-8B sized): `--device cpu --tiny`. transformers refuses to
quantize without a GPU, so there the script tells its FP8 quantizer the environment is fine (validate_environment);
everything else runs as on the GPU.
"""
import argparse, glob, json, math, os, struct, sys
import numpy as np, torch
from hf_common import randomize   # scripts/gpu/, beside this file: hf_reference.py's convention

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--out", required=True)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
ap.add_argument("--tiny", action="store_true", help="test width (hidden 256, ffn 768, 4 heads, 2 KV heads, vocab 2048) instead of Llama-3-8B's")
ap.add_argument("--backend", default="auto", choices=["auto", "transformers", "emulated"],
                help="who computes hf_fp8_logits.f32: transformers' FP8Linear where its kernel loads (auto), only it, or the emulation")
ap.add_argument("--no-requantize", dest="requantize", action="store_false",
                help="keep the weights exactly as transformers quantized them at load, double rounding included (see requantize_from_source)")
a = ap.parse_args()

try:
    import transformers
    from transformers import FineGrainedFP8Config, LlamaConfig, LlamaForCausalLM
except ImportError as e:
    sys.exit(f"hf_fp8_reference: the installed transformers ({getattr(sys.modules.get('transformers'), '__version__', 'missing')}) "
             f"has no FineGrainedFP8Config ({e}); this script needs transformers 5 with fine-grained FP8")
try:
    from transformers.integrations.finegrained_fp8 import FP8Linear
except ImportError as e:
    sys.exit(f"hf_fp8_reference: transformers {transformers.__version__} has no integrations.finegrained_fp8.FP8Linear ({e})")
if not hasattr(torch, "float8_e4m3fn"):
    sys.exit(f"hf_fp8_reference: torch {torch.__version__} has no float8_e4m3fn")
if a.device == "cuda" and not torch.cuda.is_available():
    sys.exit("hf_fp8_reference: no CUDA device (use --device cpu --tiny to test without one)")

BLOCK = 128
E4M3_MAX = 448.0
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")

width = (dict(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=2, vocab_size=2048) if a.tiny else
         dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256))
for key in ["hidden_size", "intermediate_size"]:
    # transformers quantizes only matrices whose both sides are multiples of the block (Fp8Quantize._quantize_one).
    assert width[key] % BLOCK == 0, f"{key} {width[key]} is not a multiple of {BLOCK}"
bf16_dir, fp8_dir = os.path.join(a.out, "bf16"), os.path.join(a.out, "fp8")
os.makedirs(bf16_dir, exist_ok=True); os.makedirs(fp8_dir, exist_ok=True)
dev = torch.device(a.device)
torch.manual_seed(0)


def safetensors_headers(folder):
    """{tensor name: (dtype, shape, file)} from the JSON headers of every *.safetensors in `folder`."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                out[name] = (info["dtype"], tuple(info["shape"]), os.path.basename(path))
    return out


def teacher_forced(model, tokens):
    with torch.no_grad():
        return model(tokens[None].to(dev)).logits[0].float().cpu().numpy()


def write_logits(logits, path):
    logits.astype("<f4").tofile(path)
    print(f"  {path}: {logits.shape}, std {logits.std():.3f}", flush=True)


# 1. The bf16 checkpoint and the fp32 reference on its bf16-rounded weights.
rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
cfg = LlamaConfig(num_hidden_layers=a.layers, rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=False,
                  rope_parameters=rope, dtype="bfloat16", **width)
with dev:
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
randomize(model)
model.save_pretrained(bf16_dir, safe_serialization=True)
print(f"transformers {transformers.__version__}, torch {torch.__version__}; bf16 checkpoint: {bf16_dir}", flush=True)
vocab = cfg.vocab_size
g = torch.Generator().manual_seed(1)
tokens = torch.randint(0, min(49155, vocab), (a.tokens,), generator=g)   # hf_reference.py's sequence at full width
with open(os.path.join(a.out, "tokens.txt"), "w") as f:
    f.write(" ".join(str(int(t)) for t in tokens) + "\n")
model = model.float().eval()
model.config._attn_implementation = "eager"
write_logits(teacher_forced(model, tokens), os.path.join(bf16_dir, "ref_logits.f32"))
del model
if a.device == "cuda":
    torch.cuda.empty_cache()

# 2. transformers quantizes the bf16 folder at load, and saves what it holds.
if a.device == "cpu":
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer
    FineGrainedFP8HfQuantizer.validate_environment = lambda self, *args, **kwargs: None   # test path: see the docstring
fp8 = LlamaForCausalLM.from_pretrained(bf16_dir, quantization_config=FineGrainedFP8Config(weight_block_size=[BLOCK, BLOCK]),
                                       dtype=torch.bfloat16, device_map=a.device, attn_implementation="eager").eval()
fp8_linears = {n: m for n, m in fp8.named_modules() if isinstance(m, FP8Linear)}
expected_linears = 7 * a.layers
if len(fp8_linears) != expected_linears or any(m.weight.dtype != torch.float8_e4m3fn for m in fp8_linears.values()):
    sys.exit(f"hf_fp8_reference: transformers made {len(fp8_linears)} FP8Linear layers (expected {expected_linears}: q, k, v, o, gate, "
             f"up, down per layer) or left some weights unquantized: {[(n, m.weight.dtype) for n, m in fp8_linears.items()][:4]}")
if isinstance(fp8.lm_head, FP8Linear) or fp8.lm_head.weight.dtype != torch.bfloat16:
    sys.exit(f"hf_fp8_reference: lm_head is {type(fp8.lm_head).__name__} {fp8.lm_head.weight.dtype}, expected a bf16 nn.Linear")


def requantize_from_source():
    """transformers 5.17 (and later 5.x until huggingface/transformers PR 48352) materializes each bf16 weight in the
    FP8 parameter's dtype before quantizing it on the fly (core_model_loading: `_dtype = empty_param.dtype`), so its
    block quantization sees weights already cast to e4m3 directly, most of them subnormal at std 0.02: a second,
    coarse rounding that no published checkpoint has. Each FP8Linear whose codes or scales differ from what
    transformers' own quantizer (Fp8Quantize) makes of the bf16 weight is given those instead. Returns how many."""
    from safetensors import safe_open
    from transformers.integrations.finegrained_fp8 import Fp8Quantize
    quantize = Fp8Quantize(fp8.hf_quantizer)
    replaced = 0
    files = safetensors_headers(bf16_dir)
    for name, module in fp8_linears.items():
        key = name + ".weight"
        with safe_open(os.path.join(bf16_dir, files[key][2]), framework="pt") as f:
            out = quantize.convert({key: f.get_tensor(key).to(dev)})
        codes, scale_inv = out[key], out[name + ".weight_scale_inv"]
        if codes.dtype != torch.float8_e4m3fn or scale_inv.shape != module.weight_scale_inv.shape:
            sys.exit(f"hf_fp8_reference: transformers' Fp8Quantize made {codes.dtype} {tuple(scale_inv.shape)} of {key}")
        if not (torch.equal(codes.view(torch.uint8), module.weight.data.view(torch.uint8))
                and torch.equal(scale_inv.float(), module.weight_scale_inv.data.float())):
            module.weight.data.copy_(codes); module.weight_scale_inv.data.copy_(scale_inv)
            replaced += 1
    return replaced


if a.requantize:
    replaced = requantize_from_source()
    if replaced:
        print(f"transformers {transformers.__version__} quantized {replaced} of {len(fp8_linears)} FP8Linear weights from an e4m3 cast of the "
              f"bf16 weights (double rounding: PR 48352); they now hold what its Fp8Quantize makes of the bf16 weights", flush=True)
    else:
        print("transformers' FP8 weights are what its Fp8Quantize makes of the bf16 weights (no double rounding)", flush=True)


def quantize_activations(x):
    """transformers' dynamic activation quantization per 1×128 block: s = absmax / 448, code = e4m3(x / s)
    (round to nearest even, saturating), returned dequantized (code × s) in fp32."""
    xf = x.float()
    k = xf.shape[-1]
    pad = (-k) % BLOCK
    if pad:
        xf = torch.nn.functional.pad(xf, (0, pad))
    blocks = xf.reshape(*xf.shape[:-1], -1, BLOCK)
    s = blocks.abs().amax(dim=-1, keepdim=True) / E4M3_MAX
    s = torch.where(s > 0, s, torch.ones_like(s))   # an all-zero block: codes 0 whatever its scale
    codes = (blocks / s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return (codes.float() * s).reshape(xf.shape)[..., :k]


def dequantize_weight(weight, scale_inv):
    """code × scale_inv of its 128×128 block, fp32 [N, K]."""
    n, k = weight.shape
    s = scale_inv.float().repeat_interleave(BLOCK, 0)[:n].repeat_interleave(BLOCK, 1)[:, :k]
    return weight.float() * s


def emulated_forward(self, x):
    y = quantize_activations(x) @ dequantize_weight(self.weight, self.weight_scale_inv).t()
    if self.bias is not None:
        y = y + self.bias.float()
    return y.to(x.dtype)


def emulated_logits():
    original = FP8Linear.forward
    FP8Linear.forward = emulated_forward
    try:
        return teacher_forced(fp8, tokens)
    finally:
        FP8Linear.forward = original


print(f"FP8 model: {len(fp8_linears)} FP8Linear layers (e4m3, block {BLOCK}×{BLOCK}), lm_head and embeddings bf16", flush=True)
emulated = emulated_logits()
write_logits(emulated, os.path.join(fp8_dir, "w8a8_emulated_logits.f32"))
backend, hf_logits = "emulated", emulated
if a.backend != "emulated":
    try:
        hf_logits = teacher_forced(fp8, tokens)
        backend = "transformers"
    except Exception as e:   # ImportError without the `kernels` package; a hub or network error with it
        if a.backend == "transformers":
            sys.exit(f"hf_fp8_reference: transformers' FP8Linear cannot run here: {type(e).__name__}: {e}")
        print(f"transformers' FP8Linear cannot run here ({type(e).__name__}: {str(e)[:300]}); its logits are the emulation's", flush=True)
if backend == "transformers":
    if not np.isfinite(hf_logits).all():
        sys.exit("hf_fp8_reference: transformers' FP8 logits have non-finite values")
    rel = np.linalg.norm(hf_logits - emulated, axis=1) / np.linalg.norm(emulated, axis=1)
    print(f"transformers' FP8 kernel vs the emulation: rel L2 per row mean {rel.mean():.2e} max {rel.max():.2e}", flush=True)
write_logits(hf_logits, os.path.join(fp8_dir, "hf_fp8_logits.f32"))
with open(os.path.join(fp8_dir, "hf_fp8_backend.txt"), "w") as f:
    f.write(backend + "\n")
print(f"hf_fp8_logits.f32 computed by: {backend}", flush=True)

# The W8A16 reference: the function the FP8 checkpoint defines with weights dequantized exactly (code × scale_inv) and
# no activation quantization, computed in fp32 like ref_logits.f32. Kiln's prefill path that dequantizes each FP8
# layer to bf16 computes this function, and compare_logits.py holds it to bf16-sized bounds against it (mode w8a16).
w8a16 = LlamaForCausalLM.from_pretrained(bf16_dir, dtype=torch.float32, device_map=a.device, attn_implementation="eager").eval()
with torch.no_grad():
    for name, module in fp8_linears.items():
        w8a16.get_submodule(name).weight.copy_(dequantize_weight(module.weight, module.weight_scale_inv))
w8a16_logits = teacher_forced(w8a16, tokens)
write_logits(w8a16_logits, os.path.join(fp8_dir, "w8a16_ref_logits.f32"))
del w8a16
bf16_logits = np.fromfile(os.path.join(bf16_dir, "ref_logits.f32"), dtype="<f4").reshape(hf_logits.shape)
for what, got, ref in [("FP8 (W8A8) vs bf16", hf_logits, bf16_logits), ("W8A16 vs bf16", w8a16_logits, bf16_logits),
                       ("FP8 (W8A8) vs W8A16", hf_logits, w8a16_logits)]:
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"  quantization error, {what}: rel L2 per row mean {rel.mean():.3e} max {rel.max():.3e}", flush=True)
if a.device == "cuda":
    torch.cuda.empty_cache()

# 3. Saved as transformers writes it; then the files are checked for the format Kiln reads.
fp8.save_pretrained(fp8_dir, safe_serialization=True)
expected_weights = {name + ".weight": tuple(m.weight.shape) for name, m in fp8_linears.items()}
reference_weight = {name: (m.weight.detach().cpu(), m.weight_scale_inv.detach().cpu()) for name, m in list(fp8_linears.items())[:1]}
del fp8
if a.device == "cuda":
    torch.cuda.empty_cache()


def check_fp8_folder(folder, expected_weights):
    """Errors (strings) where the folder is not transformers' fine-grained FP8 format as Kiln's loader reads it."""
    errors = []
    tensors = safetensors_headers(folder)
    if not tensors:
        return [f"{folder}: no *.safetensors"]
    for name, (n, k) in sorted(expected_weights.items()):
        scale = name[: -len(".weight")] + ".weight_scale_inv"
        got = tensors.get(name)
        if got is None or got[0] != "F8_E4M3" or got[1] != (n, k):
            errors.append(f"{name}: {got[:2] if got else 'missing'}, expected F8_E4M3 {(n, k)}")
        want_scale = (math.ceil(n / BLOCK), math.ceil(k / BLOCK))
        got = tensors.get(scale)
        if got is None or got[0] != "F32" or got[1] != want_scale:
            errors.append(f"{scale}: {got[:2] if got else 'missing'}, expected F32 {want_scale}")
    for name, (dtype, shape, _) in tensors.items():
        if name not in expected_weights and not name.endswith(".weight_scale_inv") and dtype != "BF16":
            errors.append(f"{name}: {dtype} {shape}, expected BF16 (not quantized)")
        if "activation_scale" in name:
            errors.append(f"{name}: a static activation scale in a dynamic-scheme checkpoint")
    for name in ["lm_head.weight", "model.embed_tokens.weight"]:
        if tensors.get(name, ("missing",))[0] != "BF16":
            errors.append(f"{name}: {tensors.get(name, ('missing',))[:2]}, expected BF16")
    try:
        q = json.load(open(os.path.join(folder, "config.json"))).get("quantization_config") or {}
    except (OSError, ValueError) as e:
        return errors + [f"config.json: {e}"]
    if q.get("quant_method") != "fp8" or list(q.get("weight_block_size") or []) != [BLOCK, BLOCK] or q.get("activation_scheme") != "dynamic":
        errors.append(f"config.json quantization_config {q}: expected quant_method fp8, weight_block_size [128, 128], activation_scheme dynamic")
    return errors


errors = check_fp8_folder(fp8_dir, expected_weights)
if errors:
    print("ERROR: the saved FP8 folder is not transformers' fine-grained FP8 format as expected:", *errors[:20], sep="\n  ")
    sys.exit(1)
# The codes and scales on disk are those the model computed with (what Kiln reads is what transformers ran).
from safetensors import safe_open
for name, (codes, scale_inv) in reference_weight.items():
    tensors = safetensors_headers(fp8_dir)
    with safe_open(os.path.join(fp8_dir, tensors[name + ".weight"][2]), framework="pt") as f:
        on_disk = f.get_tensor(name + ".weight")
    with safe_open(os.path.join(fp8_dir, tensors[name + ".weight_scale_inv"][2]), framework="pt") as f:
        scale_on_disk = f.get_tensor(name + ".weight_scale_inv")
    if not (torch.equal(on_disk.view(torch.uint8), codes.view(torch.uint8)) and torch.equal(scale_on_disk, scale_inv)):
        sys.exit(f"hf_fp8_reference: {name} on disk differs from the codes/scales transformers computed with")
    # code × scale_inv is the bf16 weight within e4m3 rounding: half a step is at most |w|/16, or 2^-10 × scale_inv
    # among the subnormals (the format's meaning as Kiln reads it: dequantized = value × scale_inv of its block).
    with safe_open(os.path.join(bf16_dir, safetensors_headers(bf16_dir)[name + ".weight"][2]), framework="pt") as f:
        source = f.get_tensor(name + ".weight").float()
    deq = dequantize_weight(on_disk, scale_on_disk)
    s = scale_on_disk.float().repeat_interleave(BLOCK, 0)[: source.shape[0]].repeat_interleave(BLOCK, 1)[:, : source.shape[1]]
    excess = ((deq - source).abs() - (source.abs() / 16 + s * 2.0 ** -10) * (1 + 1e-6)).max().item()
    if excess > 0:
        sys.exit(f"hf_fp8_reference: {name}: code × scale_inv is off the bf16 weight by more than e4m3 rounding ({excess:.3g} over)")
quant = json.load(open(os.path.join(fp8_dir, "config.json")))["quantization_config"]
files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(fp8_dir, "*")))
print(f"fp8 folder OK: {len(expected_weights)} F8_E4M3 weights with F32 [ceil(N/128), ceil(K/128)] scale_inv; "
      f"quantization_config {json.dumps(quant, sort_keys=True)}; files {files}", flush=True)
