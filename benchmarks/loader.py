"""Loader throughput: the full teacher_lora pipeline against a plain decode loop.

For each dataset (the 18 real photos of fruits_nuts, and a 500-image synthetic shapes set), side by
side in one run:

* baseline: a plain loop of ``PIL.Image.open(...).convert('RGB')`` + ``pycocotools`` ``annToMask``
  for every annotation (single process) -- the unavoidable decode;
* ours: ``make_dataloader(CocoDataset(..., masks=True, preprocess=[DinoPreprocess(), SamPreprocess()]))``
  with 0 and 2 worker processes: decode, EXIF, and per image the boxes/labels/iscrowd targets and
  both teachers' targets (Grounding DINO's relative boxes and input size; SAM's box prompts and masks
  in its 1024 px frame, at the decoder's 256 px), collated into uint8 batches. SAM's masks are made
  where they are used: polygons are rasterised by pycocotools straight into the 256 px frame, RLEs
  decoded at full size and resized; full-size masks are not decoded, as no step of this pipeline
  uses them (the baseline decodes every mask at full size). Worker processes send each batch as one
  block of shared memory. The pixel work -- resizing to 800 / 1024 px, normalising, padding -- is
  each teacher's ``to_model``, which runs on the accelerator; a last row adds it on this CPU, to show
  what it costs where there is no GPU.

Throughput is images per second over whole epochs after one warm-up epoch (page cache and
persistent workers warm). Target: ours >= 0.8x the baseline's throughput.

    python benchmarks/loader.py                 # both datasets
    python benchmarks/loader.py --shapes 100    # a smaller shapes set

The photos come from `teacher_lora.datasets.fruits_nuts()` ($TEACHER_LORA_DATA, the cache, or a download) unless --fruits names a folder.
"""
import argparse, contextlib, io, sys, time
from pathlib import Path

import numpy as np, torch
from PIL import Image
from pycocotools.coco import COCO

from teacher_lora.data import CocoDataset, DinoPreprocess, SamPreprocess, make_dataloader
from teacher_lora.datasets import DatasetError, fruits_nuts
from teacher_lora.test_utils import shapes_dataset

TARGET = 0.8


def timed_epochs(run_epoch, n_images, min_seconds=3.0):
    "Images/second of `run_epoch` over whole epochs (after one warm-up epoch), at least `min_seconds` in all."
    run_epoch()
    t0, n = time.perf_counter(), 0
    while True:
        run_epoch(); n += n_images
        if (dt := time.perf_counter() - t0) >= min_seconds: return n / dt


def baseline(ann, images):
    "Plain loop: PIL decode to RGB + annToMask for every annotation."
    with contextlib.redirect_stdout(io.StringIO()): coco = COCO(str(ann))
    ids = coco.getImgIds()
    def epoch():
        for i in ids:
            np.asarray(Image.open(images/coco.imgs[i]['file_name']).convert('RGB'))
            for a in coco.imgToAnns[i]: coco.annToMask(a)
    return timed_epochs(epoch, len(ids))


def ours(ann, images, workers, batch_size=4, to_model=False):
    "The full pipeline through `make_dataloader`; with `to_model`, also both teachers' pixel tensors (here on the CPU)."
    dp, sp = DinoPreprocess(), SamPreprocess()
    ds = CocoDataset(ann, images, masks=True, preprocess=[dp, sp])
    dl = make_dataloader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    def epoch():
        for b in dl:
            assert b['image'].dtype == torch.uint8 and len(b['sam']['masks']) == len(b['image_id'])
            assert all(m.shape[1:] == (sp.mask_size,) * 2 and len(m) == len(l) for m, l in zip(b['sam']['masks'], b['sam']['labels']))
            if to_model: dp.to_model(b), sp.to_model(b)
    return timed_epochs(epoch, len(ds))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--fruits', default=None, help='folder with trainval.json and images/ (default: teacher_lora.datasets.fruits_nuts())')
    p.add_argument('--shapes', type=int, default=500, help='images in the synthetic shapes set')
    p.add_argument('--workdir', default='/tmp/teacher_lora_bench', help='where the shapes set is cached')
    args = p.parse_args()
    try: fruits = Path(args.fruits) if args.fruits else fruits_nuts().root
    except DatasetError as e: sys.exit(f"error: {e}")
    shapes = Path(args.workdir)/f'shapes_{args.shapes}'
    ann = shapes/'annotations.json'
    if not ann.exists(): ann = shapes_dataset(shapes, args.shapes, seed=0)
    sets = [('fruits_nuts', fruits/'trainval.json', fruits/'images'),
            (f'shapes ({args.shapes})', ann, shapes/'images')]
    rows, heads = [], []
    for name, a, im in sets:
        base = baseline(a, im)
        rows.append((name, 'PIL + annToMask loop', '-', base, 1.0))
        ratios = []
        for w in (0, 2):
            r = ours(a, im, w); ratios.append(r / base)
            rows.append((name, 'teacher_lora loader', str(w), r, r / base))
        r = ours(a, im, 0, to_model=True)
        rows.append((name, '  + to_model on this CPU', '0', r, r / base))
        heads.append(f"{name.split()[0]} {ratios[0]:.2f}x/{ratios[1]:.2f}x")
    print(f"torch threads {torch.get_num_threads()}; throughput after a warm-up epoch\n")
    print(f"{'dataset':<16}{'pipeline':<30}{'workers':>8}{'images/s':>10}{'x baseline':>12}")
    for r in rows: print(f"{r[0]:<16}{r[1]:<30}{r[2]:>8}{r[3]:>10.1f}{r[4]:>11.2f}x")
    best = [max(x[4] for x in rows if x[0] == n and x[1] == 'teacher_lora loader') for n, *_ in sets]
    print(f"\ntarget >= {TARGET}x baseline (best worker setting): " + ', '.join(
        f"{n} {b:.2f}x {'PASS' if b >= TARGET else 'FAIL'}" for (n, *_), b in zip(sets, best)))
    print("loader throughput vs baseline (0 / 2 workers): " + ', '.join(heads))


if __name__ == '__main__': main()
