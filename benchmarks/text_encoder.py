"""Which text encoder for the tiny Grounding DINO: pretrained MiniLM (frozen) or a small BERT trained with the detector?

    python benchmarks/text_encoder.py              # two short pretraining runs, about 10 min on 2 CPU cores

Both arms are `benchmarks/pretrain_tiny.py --only dino --text minilm|scratch` with everything else equal (same seed,
data, steps and schedule), written to their own folders. Each is scored on the held-out source and target images:
box AP50 with the class names as prompt, the same with every detection and object counted as one class (can it find
the shapes?), and how alike its class-token features are after the fusion encoder (can it tell the classes apart?).
"""
import argparse, json, subprocess, sys, warnings
from pathlib import Path
import torch

warnings.filterwarnings('ignore', category=FutureWarning)
sys.path.insert(0, str(Path(__file__).parent))
from pretrain_tiny import DATA, DINO_SIDE, predict
from teacher_lora.data import CocoDataset, DinoPreprocess, make_dataloader
from teacher_lora.pretrained import tiny_card
from teacher_lora.teachers import PromptMap, dino_inputs
from teacher_lora.test_utils import shapes_domain
from teacher_lora.tasks import coco_box_ap


def agnostic_ap50(gt, res):
    "Box AP50 with every object and detection counted as one class: how well the model finds shapes, whatever it calls them."
    one = lambda xs: [dict(x, category_id=1) for x in xs]
    return coco_box_ap(dict(gt, annotations=one(gt['annotations']), categories=[dict(id=1, name='object')]), one(res))['ap50']


def class_token_cosine(model, ann):
    "Largest cosine similarity between two classes' token features after the fusion encoder, on the first image of `ann`."
    gt = json.loads(ann.read_text()); pm = PromptMap([c['name'] for c in gt['categories']]); pre = DinoPreprocess(*DINO_SIDE)
    b = next(iter(make_dataloader(CocoDataset(ann, ann.parent/'images', preprocess=[pre]), 1, shuffle=False)))
    x = pre.to_model(b)
    with torch.no_grad(): t = model(**dino_inputs(x['pixel_values'], x['pixel_mask'], pm)).encoder_last_hidden_state_text[0]
    f = torch.nn.functional.normalize(torch.stack([t[a:e].mean(0) for a, e in pm.spans]), dim=-1)
    c = f @ f.T
    return float(c[~torch.eye(len(f), dtype=torch.bool)].max())


def score(folder, ann):
    "AP50, class-agnostic AP50 and class-token cosine of the DINO stored in `folder`, on `ann` (its own classes as prompt)."
    m, gt, res = predict('grounding_dino', folder, ann); res = res['tuned']['dino']
    return {'box AP50': round(coco_box_ap(gt, res)['ap50'], 4), 'class-agnostic AP50': round(agnostic_ap50(gt, res), 4),
            'class-token cosine': round(class_token_cosine(m, ann), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--work', default='/tmp/teacher_lora_text_encoder')
    ap.add_argument('--steps', type=int, default=400); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default='benchmarks/results/text_encoder.json')
    a = ap.parse_args()
    torch.set_num_threads(a.threads); work = Path(a.work)
    evals = dict(source=shapes_domain(work/'source_val', DATA['val'][0], 'source', seed=DATA['val'][1]),
                 target=shapes_domain(work/'target_val', 48, 'target', seed=200))
    rows = []
    for text in ('minilm', 'scratch'):
        out = work/text
        subprocess.run([sys.executable, str(Path(__file__).parent/'pretrain_tiny.py'), '--only', 'dino', '--text', text, '--dino-steps', str(a.steps),
                        '--threads', str(a.threads), '--out', str(out), '--work', str(work/'data')], check=True, stdout=subprocess.DEVNULL)
        card = tiny_card('grounding_dino', out)
        rows.append(dict(text=text, seconds=card['pretraining']['seconds'], **{d: score(out, ann) for d, ann in evals.items()}))
        print(f"{text}: {json.dumps(rows[-1])}", flush=True)
    print(f"\nGrounding DINO text encoder, {a.steps} pretraining steps each (same seed, data and schedule):\n")
    print('| text encoder | domain | box AP50 | class-agnostic AP50 | class-token cosine |\n|---|---|---|---|---|')
    for r in rows:
        for d in evals: print(f"| {r['text']} | {d} | {r[d]['box AP50']:.3f} | {r[d]['class-agnostic AP50']:.3f} | {r[d]['class-token cosine']:.3f} |")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(dict(steps=a.steps, threads=a.threads, rows=rows), indent=1))
    m, s = rows
    print(f"text_encoder: source box AP50 MiniLM {m['source']['box AP50']:.3f} vs trained-from-scratch {s['source']['box AP50']:.3f}; "
          f"class-token cosine {m['source']['class-token cosine']:.2f} vs {s['source']['class-token cosine']:.2f}")


if __name__ == '__main__':
    main()
