"""Frozen-feature cache entry sizes of the real-size teachers (random weights; CPU; one image each).

What `train.cache` stores per image, measured on real `dino_encode` outputs and a real SAM image embedding:
Grounding DINO-T (`GroundingDinoConfig()` = grounding-dino-tiny: Swin-T + BERT-base, 172M parameters) at its
default 800x1333 input with a 3-class prompt, and SAM ViT-B at 1024 px, stored in fp32 and in 16 bits
(`train.cache_dtype`: fp16, bf16) through the cache's own `pack_features`. The last line states the headline.

    python benchmarks/cache_size.py [--shortest 800] [--longest 1333] [--sam-size 1024] [--images 1000]

Takes about a minute on a CPU (the DINO-T forward at 800x1333 is ~10-20 s, the ViT-B encoder ~20-25 s).
"""
import argparse, time, warnings
warnings.filterwarnings('ignore')
import torch

def dino_entry(shortest, longest):
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection
    from teacher_lora.teachers import PromptMap
    from teacher_lora.tasks import dino_encode
    torch.manual_seed(0)
    m = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()  # grounding-dino-tiny architecture, random weights
    t0 = time.perf_counter()
    f = dino_encode(m, torch.randn(1, 3, shortest, longest), PromptMap(['circle', 'square', 'triangle']))
    return f, time.perf_counter() - t0

def sam_entry(size):
    from teacher_lora.teachers import build_sam, SAM_CONFIGS
    torch.manual_seed(0)
    m = build_sam(**SAM_CONFIGS['vit_b'], img_size=size).eval()
    t0 = time.perf_counter()
    with torch.no_grad(): emb = m.image_encoder(torch.randn(1, 3, size, size))[0]
    return dict(emb=emb), time.perf_counter() - t0

def main():
    from teacher_lora.cache import pack_features, fmt_bytes
    p = argparse.ArgumentParser()
    p.add_argument('--shortest', type=int, default=800); p.add_argument('--longest', type=int, default=1333)
    p.add_argument('--sam-size', type=int, default=1024); p.add_argument('--images', type=int, default=1000)
    a = p.parse_args()
    entries = {f"Grounding DINO-T {a.shortest}x{a.longest}": dino_entry(a.shortest, a.longest), f"SAM ViT-B {a.sam_size}": sam_entry(a.sam_size)}
    print(f"frozen-feature cache entry per image (real dino_encode / image-encoder outputs; random weights; CPU)\n")
    for name, (f, s) in entries.items():
        print(f"{name} (encode {s:.1f} s): " + ', '.join(f"{k} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for k, v in f.items()))
    print(f"\n{'teacher':<30}{'fp32':>11}{'fp16':>11}{'bf16':>11}{f'x{a.images} fp32':>14}{f'x{a.images} 16-bit':>15}")
    size = {}
    for name, (f, _) in entries.items():
        size[name] = {d: sum(t.nbytes for t in pack_features(f, d)[0].values()) for d in ('fp32', 'fp16', 'bf16')}
        z = size[name]
        print(f"{name:<30}{fmt_bytes(z['fp32']):>11}{fmt_bytes(z['fp16']):>11}{fmt_bytes(z['bf16']):>11}"
              f"{fmt_bytes(z['fp32'] * a.images):>14}{fmt_bytes(z['fp16'] * a.images):>15}")
    tot = {d: sum(z[d] for z in size.values()) for d in ('fp32', 'fp16')}
    print(f"\nheadline: one image of both teachers caches {fmt_bytes(tot['fp32'])} in fp32, {fmt_bytes(tot['fp16'])} in 16 bits; "
          f"{a.images} images {fmt_bytes(tot['fp32'] * a.images)} vs {fmt_bytes(tot['fp16'] * a.images)}")

if __name__ == '__main__': main()
