"""Teacher sizes: parameters, LoRA-trainable share and adapter size on the real-size architectures.

Grounding DINO Swin-T + BERT-base (``GroundingDinoConfig()`` = grounding-dino-tiny) and SAM ViT-B
(ViT-L and ViT-H parameter counts too), built with random weights -- sizes do not depend on the
values. For each LoRA rank and storage precision, the adapter is written by ``save_teacher`` (peft
format, ``adapter_model.safetensors``) and measured on disk; the full checkpoint size is the model's
fp32 state dict, as Meta's ``.pth`` and the hub's ``model.safetensors`` store it. The library's
defaults are rank 8 and float16 storage.

Targets: trainable <= 2% of each model; both adapters together >= 500x smaller than both full
checkpoints.

    python benchmarks/teachers.py
"""
import argparse, tempfile, time
from pathlib import Path

import torch

from teacher_lora.teachers import DINO_LORA_TARGETS, SAM_LORA_TARGETS, apply_lora, count_parameters, load_sam, save_teacher

MB = 1e6


def state_bytes(model):
    "Bytes of the model's state dict (what a full fp32 checkpoint stores)."
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def adapter_bytes(model, targets, r, dtype):
    "Trainable parameters and on-disk size of a rank-`r` adapter saved in `dtype`, peft format."
    pm = apply_lora(model, targets, r=r, alpha=2 * r)
    trainable = count_parameters(pm)['trainable']
    with tempfile.TemporaryDirectory() as d:
        save_teacher(pm, d, {}, dtype=dtype)
        size = (Path(d)/'adapter_model.safetensors').stat().st_size
    pm.unload()  # back to the plain model for the next rank
    return trainable, size


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--ranks', default='4,8,16')
    args = p.parse_args()
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection
    t0 = time.time()
    torch.manual_seed(0)
    models = {'Grounding DINO Swin-T': (GroundingDinoForObjectDetection(GroundingDinoConfig()), DINO_LORA_TARGETS),
              'SAM ViT-B': (load_sam('vit_b', 'random'), SAM_LORA_TARGETS)}
    totals = {k: count_parameters(m)['total'] for k, (m, _) in models.items()}
    full = {k: state_bytes(m) for k, (m, _) in models.items()}
    print(f"built in {time.time()-t0:.0f} s")
    for v in ('vit_l', 'vit_h'): print(f"SAM {v}: {sum(p.numel() for p in load_sam(v, 'random').parameters())/1e6:.1f}M parameters")
    print(f"\n{'model':<24}{'params':>10}{'rank':>6}{'dtype':>6}{'trainable':>11}{'share':>8}{'adapter MB':>12}{'full MB':>9}{'x smaller':>11}")
    res = {}
    for r in map(int, args.ranks.split(',')):
        for dt in (torch.float32, torch.float16):
            for k, (m, tg) in models.items():
                tr, sz = adapter_bytes(m, tg, r, dt)
                res[k, r, dt] = (tr, sz)
                print(f"{k:<24}{totals[k]/1e6:>9.1f}M{r:>6}{str(dt)[6:]:>8}{tr:>11,}{tr/totals[k]:>8.2%}{sz/MB:>12.2f}{full[k]/MB:>9.0f}{full[k]/sz:>10.0f}x")
    print()
    heads = []
    for r in map(int, args.ranks.split(',')):
        for dt in (torch.float32, torch.float16):
            both = sum(res[k, r, dt][1] for k in models)
            share = max(res[k, r, dt][0] / totals[k] for k in models)
            ok = share <= .02 and sum(full.values()) / both >= 500
            print(f"rank {r:>2} {str(dt)[6:]:>7}: adapters {both/MB:.2f} MB vs checkpoints {sum(full.values())/MB:.0f} MB = "
                  f"{sum(full.values())/both:.0f}x smaller; max trainable share {share:.2%}  {'PASS' if ok else 'FAIL'} (<= 2%, >= 500x)")
            heads.append(f"r{r} {str(dt)[6:]} {sum(full.values())/both:.0f}x")
    tr = {k: res[k, 8, torch.float16][0] / totals[k] for k in models}
    both = sum(res[k, 8, torch.float16][1] for k in models)
    print(f"teachers (defaults: rank 8, float16 adapters): trainable {', '.join(f'{k} {v:.2%}' for k, v in tr.items())}; "
          f"adapters {both/MB:.2f} MB vs full {sum(full.values())/MB:.0f} MB = {sum(full.values())/both:.0f}x smaller")

if __name__ == '__main__': main()
