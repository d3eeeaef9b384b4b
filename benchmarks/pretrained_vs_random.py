"""Does pretraining help on real photos? LoRA from the shipped tiny pretrained teachers vs from random weights, on fruits_nuts.

    python benchmarks/pretrained_vs_random.py [--data FOLDER]   # about 10 min on 2 CPU cores

The photos come from `teacher_lora.datasets.fruits_nuts()` ($TEACHER_LORA_DATA, the cache, or a download) unless --data names a folder.

The 18 photos are split by image id (every third one held out: 12 train, 6 test); the user's files are only read.
For each teacher: zero-shot and LoRA r=8 from the pretrained weights, and the same from random weights of the same
architecture, with the same loop, steps and learning rate as benchmarks/lora_vs_full.py (each run a fresh process).
"""
import argparse, json, sys
from pathlib import Path
import torch

from lora_vs_full import TEACHERS, run_sub
from teacher_lora.datasets import DatasetError, fruits_nuts


def split(root:Path, work:Path):
    "Write train/test COCO files of fruits_nuts into `work` (every third image id held out), images linked, not copied."
    d = json.loads((root/'trainval.json').read_text()); work.mkdir(parents=True, exist_ok=True)
    if not (work/'images').exists(): (work/'images').symlink_to((root/'images').resolve())
    ids = sorted(i['id'] for i in d['images']); test = set(ids[2::3])
    for name, keep in (('train', lambda i: i not in test), ('test', lambda i: i in test)):
        part = dict(d, images=[i for i in d['images'] if keep(i['id'])], annotations=[a for a in d['annotations'] if keep(a['image_id'])])
        (work/f'{name}.json').write_text(json.dumps(part))
    return work/'train.json', work/'test.json'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=None, help='folder with trainval.json and images/ (default: fruits_nuts())')
    ap.add_argument('--work', default='/tmp/teacher_lora_fruits')
    ap.add_argument('--epochs', type=int, default=20); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default='benchmarks/results/pretrained_vs_random.json')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try: data = Path(a.data) if a.data else fruits_nuts().root
    except DatasetError as e: sys.exit(f"error: {e}")
    train, test = split(data, Path(a.work))
    rows = []
    for teacher in TEACHERS:
        for init in ('pretrained', 'random'):
            for mode in ('zero-shot', 'lora-8'):
                r = run_sub(teacher, mode, init, train, test, a.epochs, 4); rows.append(r)
                print(f"{teacher:5} {init:10} {mode:9} {json.dumps(r['metrics'])}  {r['seconds']:.0f}s", flush=True)
    print(f"\nfruits_nuts (real photos, 3 classes): 12 training images, {a.epochs} epochs, batch 4, LoRA r=8; 6 held-out images\n")
    print('| teacher | start | zero-shot | LoRA r=8 | gain |\n|---|---|---|---|---|')
    head = []
    for t, (title, m1, m2) in TEACHERS.items():
        for init in ('pretrained', 'random'):
            z, l = ({r['mode']: r['metrics'] for r in rows if r['teacher'] == t and r['init'] == init}[m] for m in ('zero-shot', 'lora-8'))
            print(f"| {title} | {init} | {m1} {z[m1]:.3f}, {m2} {z[m2]:.3f} | {m1} {l[m1]:.3f}, {m2} {l[m2]:.3f} | {l[m1] - z[m1]:+.3f} |")
        get = lambda init: next(r['metrics'][m1] for r in rows if r['teacher'] == t and r['init'] == init and r['mode'] == 'lora-8')
        head.append(f"{title} {m1} {get('pretrained'):.3f} vs {get('random'):.3f}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(dict(rows=rows, settings=dict(epochs=a.epochs, batch_size=4, train_images=12, test_images=6)), indent=1))
    print(f"\npretrained_vs_random on fruits_nuts, LoRA r=8 from pretrained vs from random: {'; '.join(head)}")


if __name__ == '__main__':
    main()
