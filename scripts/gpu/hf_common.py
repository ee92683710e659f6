"""What the transformers reference scripts (hf_reference.py, hf_fp8_reference.py) share: the random-weight convention
of their checkpoints."""
import torch


def randomize(model):
    """Matrices N(0, 0.02²); norms 1 ± 0.1, so a wrong norm weight shows. Seeded by the caller (torch.manual_seed)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.1 * (2 * torch.rand_like(p, dtype=torch.float32) - 1))
            else:
                p.copy_(torch.randn_like(p, dtype=torch.float32) * 0.02)
