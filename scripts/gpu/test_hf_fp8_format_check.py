"""The format check of hf_fp8_reference.py (check_fp8_folder) on folders made here, torch-free: plain python3.
A folder as transformers writes it passes; each departure from the format Kiln reads (scale shape, scale dtype, an
unquantized weight, a quantized lm_head, a missing scale, another activation scheme or block size) is named."""
import ast, json, math, os, struct, glob, sys, tempfile
src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hf_fp8_reference.py')).read()
mod = ast.parse(src)
ns = {"json": json, "math": math, "os": os, "struct": struct, "glob": glob, "BLOCK": 128}
exec(compile(ast.Module([n for n in mod.body if isinstance(n, ast.FunctionDef) and n.name in ("safetensors_headers", "check_fp8_folder")], []), "x", "exec"), ns)
size = {"F8_E4M3": 1, "F32": 4, "BF16": 2}
def write(folder, tensors, qc):
    os.makedirs(folder, exist_ok=True)
    header, off = {}, 0
    for name, (dt, shape) in tensors.items():
        n = math.prod(shape) * size[dt]; header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}; off += n
    h = json.dumps(header).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f: f.write(struct.pack("<Q", len(h)) + h + bytes(off))
    json.dump({"quantization_config": qc}, open(os.path.join(folder, "config.json"), "w"))
good_qc = {"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}
expected = {"model.layers.0.mlp.down_proj.weight": (256, 300)}
base = {"model.layers.0.mlp.down_proj.weight": ("F8_E4M3", (256, 300)), "model.layers.0.mlp.down_proj.weight_scale_inv": ("F32", (2, 3)),
        "lm_head.weight": ("BF16", (10, 256)), "model.embed_tokens.weight": ("BF16", (10, 256)), "model.norm.weight": ("BF16", (256,))}
d = tempfile.mkdtemp()
cases = {  # name: (tensors, quantization_config, text the error must contain; None: passes)
  "good": (base, good_qc, None),
  "scale shape floor not ceil": ({**base, "model.layers.0.mlp.down_proj.weight_scale_inv": ("F32", (2, 2))}, good_qc, "expected F32 (2, 3)"),
  "bf16 scale": ({**base, "model.layers.0.mlp.down_proj.weight_scale_inv": ("BF16", (2, 3))}, good_qc, "expected F32 (2, 3)"),
  "weight left bf16": ({**base, "model.layers.0.mlp.down_proj.weight": ("BF16", (256, 300))}, good_qc, "expected F8_E4M3 (256, 300)"),
  "lm_head fp8": ({**base, "lm_head.weight": ("F8_E4M3", (10, 256))}, good_qc, "lm_head.weight: F8_E4M3"),
  "no scale": ({k: v for k, v in base.items() if not k.endswith("scale_inv")}, good_qc, "weight_scale_inv: missing"),
  "static": (base, {**good_qc, "activation_scheme": "static"}, "activation_scheme dynamic"),
  "block 64": (base, {**good_qc, "weight_block_size": [64, 64]}, "weight_block_size [128, 128]"),
}
failed = 0
for name, (t, qc, want) in cases.items():
    f = os.path.join(d, name.replace(" ", "_")); write(f, t, qc)
    errs = ns["check_fp8_folder"](f, expected)
    ok = not errs if want is None else any(want in e for e in errs)
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {errs or 'passes'}")
print(f"{len(cases) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
