"""LoRA vs full fine-tuning of the shipped tiny pretrained teachers on the target shapes domain.

    python benchmarks/lora_vs_full.py            # about 20 min on 2 CPU cores

Side by side, in one run, from the same pretrained weights (`load_dino/load_sam('tiny-pretrained')`), on the same
target-domain data, with the same loop, steps and schedule: zero-shot; LoRA r = 4, 8, 16 (the library's decoder
targets); the decoder fully trained; the whole model fully trained (Grounding DINO's text encoder stays frozen,
as in every mode). Each run is a fresh subprocess, so its peak memory is its own. Metrics are pycocotools' through the
library's `predict_coco` / `score_predictions`, on held-out target images.
"""
import argparse, json, os, subprocess, sys, time, warnings
from pathlib import Path
import torch

warnings.filterwarnings('ignore', category=FutureWarning)
from teacher_lora.data import CocoDataset, DinoPreprocess, SamPreprocess, make_dataloader
from teacher_lora.evaluate import predict_coco, score_predictions
from teacher_lora.pretrained import sam_pretrain_loss, tiny_card
from teacher_lora.teachers import DINO_LORA_TARGETS, SAM_LORA_TARGETS, apply_lora, dino_inputs, load_dino, load_sam, split_prompts
from teacher_lora.cache import FeatureCache
from teacher_lora.tasks import DinoTask, SamTask, _prompt_labels

MODES = ['zero-shot', 'lora-4', 'lora-8', 'lora-16', 'decoder', 'full']
LR = dict(lora=1e-3, full=2e-4)  # the usual ~5-10x higher learning rate for adapters than for all weights
TEACHERS = dict(sam=('SAM', 'mIoU', 'mask AP'), dino=('Grounding DINO', 'box AP50', 'box AP'))


def rss_mb(field='VmRSS'):
    "This process's resident (VmRSS) or peak resident (VmHWM) memory, MB."
    for line in open('/proc/self/status'):
        if line.startswith(field): return int(line.split()[1]) / 1024


def reset_peak():
    "Restart the peak-memory count (CUDA allocator, or the kernel's VmHWM)."
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    else: open('/proc/self/clear_refs', 'w').write('5')


def peak_mb():
    "Peak memory since `reset_peak`: CUDA tensors on a GPU, else the whole process's resident memory (model, data, Python)."
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else rss_mb('VmHWM')


def base_model(teacher, init):
    "The teacher to fine-tune: 'pretrained' (shipped) or 'random' (the same architecture, untrained)."
    if teacher == 'sam':
        if init == 'pretrained': return load_sam('tiny-pretrained')
        from teacher_lora.teachers import build_sam
        torch.manual_seed(0); return build_sam(**tiny_card('sam')['config'])
    if init == 'pretrained': return load_dino('tiny-pretrained')[0]
    from transformers import GroundingDinoConfig
    from teacher_lora.pretrained import fresh_tiny_dino
    torch.manual_seed(0); return fresh_tiny_dino(GroundingDinoConfig.from_dict(tiny_card('grounding_dino')['config']))


def prepare(model, teacher, mode):
    "Make `mode`'s parameters trainable: LoRA adapters, the decoder, or everything (but DINO's text encoder)."
    if mode.startswith('lora'):
        r = int(mode.split('-')[1])
        return apply_lora(model, DINO_LORA_TARGETS if teacher == 'dino' else SAM_LORA_TARGETS, r, 2 * r, 0.05)
    frozen = ('model.text_backbone.',) if teacher == 'dino' else ()
    dec = ('model.decoder.', 'bbox_embed.', 'class_embed.') if teacher == 'dino' else ('mask_decoder.',)
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith(frozen) and (mode == 'full' or n.startswith(dec)))
    return model


def task(model, teacher, names, ids):
    if teacher == 'sam': return SamTask(model, FeatureCache('off')), SamPreprocess(model.image_encoder.img_size if hasattr(model, 'image_encoder') else model.base_model.model.image_encoder.img_size)
    use = tiny_card('grounding_dino')['use']; pre = DinoPreprocess(use['shortest'], use['longest'])
    return DinoTask(model, FeatureCache('off'), names, ids, pre), pre


def finetune(teacher, mode, init, train_ann, test_ann, epochs, batch_size, seed=0):
    "One run: fine-tune from `init` in `mode` on `train_ann`, score on `test_ann`. Returns metrics, parameters, time, memory."
    torch.manual_seed(seed)
    gt = json.loads(Path(test_ann).read_text()); names = [c['name'] for c in gt['categories']]; ids = [c['id'] for c in gt['categories']]
    model = base_model(teacher, init)
    if mode != 'zero-shot': model = prepare(model, teacher, mode)
    t, pre = task(model, teacher, names, ids)
    params = [p for p in model.parameters() if p.requires_grad] if mode != 'zero-shot' else []
    n_train, secs, peak, before = sum(p.numel() for p in params), 0., 0., rss_mb()
    if params:
        ds = CocoDataset(train_ann, Path(train_ann).parent/'images', masks=teacher == 'sam', preprocess=[pre])
        loader = lambda ep: make_dataloader(ds, batch_size, shuffle=True, seed=seed * 1000 + ep, num_workers=0, by_size=teacher == 'dino')  # unpadded, as predicted
        steps = epochs * len(loader(0))  # by size: a partial batch per image size
        opt = torch.optim.AdamW(params, lr=LR['lora' if mode.startswith('lora') else 'full'], weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]['lr'], total_steps=steps, pct_start=.05, anneal_strategy='cos')
        pms = split_prompts(names)
        before = rss_mb(); reset_peak(); t0 = time.time(); model.train()
        for ep in range(epochs):
            for b in loader(ep):
                x = pre.to_model(b)
                if teacher == 'sam': loss = sam_pretrain_loss(model, x, b['sam']['boxes'], b['sam']['masks'], noise=0.)
                else: loss = sum(model(**dino_inputs(x['pixel_values'], x['pixel_mask'], pm), labels=[_prompt_labels(l, pm, 'cpu') for l in b['dino']['labels']]).loss
                                 for pm in pms)  # one prompt per forward: transformers' loss needs the same prompt for the whole batch
                if loss is None: sched.step(); continue
                opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.); opt.step(); sched.step()
        secs, peak = time.time() - t0, peak_mb()
    model.eval()
    tk = {'sam': t} if teacher == 'sam' else {'dino': t}
    ds = CocoDataset(test_ann, Path(test_ann).parent/'images', masks=teacher == 'sam', preprocess=[pre])
    ev = score_predictions(predict_coco(tk, ds, batch_size=4, dev='cpu'), gt)
    return dict(teacher=teacher, mode=mode, init=init, metrics={r['metric']: r['tuned'] for r in ev.rows}, trainable=n_train,
                seconds=round(secs, 1), peak_mb=round(peak, 1), before_mb=round(before, 1))


def run_sub(*args):
    "`finetune(*args)` in a fresh Python process (its own peak memory); its result."
    cmd = [sys.executable, __file__, '--one', json.dumps([str(a) if isinstance(a, Path) else a for a in args])]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {'PYTHONWARNINGS': 'ignore'})
    if out.returncode: sys.exit(f"run {args[:3]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def share(r, zero, full):
    "Share of the full fine-tuning gain that run `r` recovers."
    return (r - zero) / (full - zero) if full != zero else float('nan')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--one', help=argparse.SUPPRESS)
    ap.add_argument('--work', default='/tmp/teacher_lora_lora_vs_full')
    ap.add_argument('--train-images', type=int, default=64); ap.add_argument('--epochs', type=int, default=8)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default='benchmarks/results/lora_vs_full.json', help='where the table is written as JSON')
    ap.add_argument('--teachers', default='sam,dino', help="run these teachers; the other's rows are kept from --json (same settings)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.one: print(json.dumps(finetune(*json.loads(a.one)))); return
    from teacher_lora.test_utils import shapes_domain
    work = Path(a.work)
    train = shapes_domain(work/'target_train', a.train_images, 'target', seed=300)
    test = shapes_domain(work/'target_test', 48, 'target', seed=200)  # the pretraining script's target split
    run = a.teachers.split(',')
    kept = [r for r in json.loads(Path(a.json).read_text())['rows'] if r['teacher'] not in run] if Path(a.json).is_file() else []
    rows = []
    for teacher in TEACHERS:
        if teacher not in run: rows += [r for r in kept if r['teacher'] == teacher]; print(f"{teacher}: rows kept from {a.json}"); continue
        for mode in MODES:
            r = run_sub(teacher, mode, 'pretrained', train, test, a.epochs, 4); rows.append(r)
            print(f"{teacher:5} {mode:10} {json.dumps(r['metrics'])}  trainable {r['trainable']:,}  {r['seconds']:.0f}s  peak {r['peak_mb']:.0f} MB (before training {r['before_mb']:.0f})", flush=True)
    print(f"\ntarget shapes domain: {a.train_images} training images, {a.epochs} epochs, batch 4; 48 held-out test images. "
          f"LoRA lr {LR['lora']:g}, full/decoder lr {LR['full']:g}, one-cycle cosine; {'GPU' if torch.cuda.is_available() else 'CPU'}, {a.threads} threads\n")
    print('| teacher | mode | metric | metric 2 | trainable params | train time (s) | peak memory (MB) | share of full-FT gain |')
    print('|---|---|---|---|---|---|---|---|')
    heads = {}
    for t, (title, m1, m2) in TEACHERS.items():
        rs = {r['mode']: r for r in rows if r['teacher'] == t}
        z, f = rs['zero-shot']['metrics'][m1], rs['full']['metrics'][m1]
        for mode, r in rs.items():
            sh = '' if mode in ('zero-shot', 'full') else f"{100 * share(r['metrics'][m1], z, f):.0f}%"
            mem = f"{r['before_mb']:.0f} (no training)" if mode == 'zero-shot' else f"{r['peak_mb']:.0f}"
            print(f"| {title} | {mode} | {m1} {r['metrics'][m1]:.3f} | {m2} {r['metrics'][m2]:.3f} | {r['trainable']:,} | {r['seconds']:.0f} | {mem} | {sh} |")
        heads[t] = [share(rs[f'lora-{k}']['metrics'][m1], z, f) for k in (4, 8, 16)]
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(dict(rows=rows, settings=dict(train_images=a.train_images, epochs=a.epochs, batch_size=4, lr=LR,
                                                                    device='cuda' if torch.cuda.is_available() else 'cpu', threads=a.threads)), indent=1))
    print("\nlora_vs_full: share of the full fine-tuning gain recovered by LoRA r=4/8/16: "
          + ', '.join(f"{TEACHERS[t][0]} ({TEACHERS[t][1]}) " + '/'.join(f"{100 * s:.0f}%" for s in v) for t, v in heads.items()))


if __name__ == '__main__':
    main()
