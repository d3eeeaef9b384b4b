"""LoRA scopes vs full fine-tuning of the shipped tiny pretrained teachers on the target shapes domain, over 3 seeds.

    python benchmarks/lora_vs_full.py            # about 60 min on 2 idle CPU cores; resumes where it stopped
    python benchmarks/lora_vs_full.py --report   # the tables again, from benchmarks/results/lora_vs_full.json

Side by side, from the same pretrained weights (`load_dino/load_sam('tiny-pretrained')`), on the same target-domain
data, with the same loop, steps and schedule: zero-shot; full fine-tuning (every weight but Grounding DINO's text
encoder) with a learning-rate sweep of its own, the best kept for 3 seeds; LoRA r=8 on each scope (the library's
`lora_targets`: decoder, the last K encoder layers too, the box head) for 3 seeds; the best scope again at r=4 and
r=16 and, at r=8, at higher learning rates. Each run is a fresh subprocess, so its peak memory is its own; runs train without the feature cache (results
are equal with it: see the `tasks` lessons), so times here are uncached. Metrics are pycocotools' through the
library's `predict_coco` / `score_predictions`, on 48 held-out target images. Last, full fine-tuning is run again
(same seed and threads, then 1 thread) to show where run-to-run differences come from.
"""
import argparse, json, os, subprocess, sys, time, warnings
from pathlib import Path
import torch

warnings.filterwarnings('ignore', category=FutureWarning)
from teacher_lora.data import CocoDataset, DinoPreprocess, SamPreprocess, make_dataloader
from teacher_lora.evaluate import predict_coco, score_predictions
from teacher_lora.pretrained import sam_pretrain_loss, tiny_card
from teacher_lora.teachers import lora_targets, apply_lora, dino_inputs, load_dino, load_sam, split_prompts
from teacher_lora.cache import FeatureCache
from teacher_lora.tasks import DinoTask, SamTask, _prompt_labels

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


def prepare(model, teacher, mode, scope='decoder', r=8, heads=False):
    "Make `mode`'s parameters trainable: LoRA adapters for `scope` (the library's targets), or every weight but DINO's text encoder."
    if mode == 'lora':
        n = model.config.encoder_layers if teacher == 'dino' else len(model.image_encoder.blocks)
        return apply_lora(model, lora_targets(teacher, scope, n, heads), r, 2 * r, 0.05)
    for n, p in model.named_parameters(): p.requires_grad_(not n.startswith('model.text_backbone.'))
    return model


def task(model, teacher, names, ids):
    if teacher == 'sam': return SamTask(model, FeatureCache('off')), SamPreprocess(model.image_encoder.img_size if hasattr(model, 'image_encoder') else model.base_model.model.image_encoder.img_size)
    use = tiny_card('grounding_dino')['use']; pre = DinoPreprocess(use['shortest'], use['longest'])
    return DinoTask(model, FeatureCache('off'), names, ids, pre), pre


def finetune(spec:dict, train_ann, test_ann, epochs, batch_size):
    "One run of `spec` (teacher, mode, scope, r, heads, lr, seed): fine-tune the pretrained teacher on `train_ann`, score on `test_ann`."
    from teacher_lora.cache import fingerprint
    teacher, mode, seed = spec['teacher'], spec['mode'], spec['seed']
    torch.manual_seed(seed)
    gt = json.loads(Path(test_ann).read_text()); names = [c['name'] for c in gt['categories']]; ids = [c['id'] for c in gt['categories']]
    model = base_model(teacher, 'pretrained'); total = sum(p.numel() for p in model.parameters())
    if mode != 'zero-shot': model = prepare(model, teacher, mode, spec.get('scope'), spec.get('r'), spec.get('heads'))
    t, pre = task(model, teacher, names, ids)
    params = [p for p in model.parameters() if p.requires_grad] if mode != 'zero-shot' else []
    n_train, secs, peak, before, losses = sum(p.numel() for p in params), 0., 0., rss_mb(), []
    if params:
        ds = CocoDataset(train_ann, Path(train_ann).parent/'images', masks=teacher == 'sam', preprocess=[pre])
        loader = lambda ep: make_dataloader(ds, batch_size, shuffle=True, seed=seed * 1000 + ep, num_workers=0, by_size=teacher == 'dino')  # unpadded, as predicted
        steps = epochs * len(loader(0))  # by size: a partial batch per image size
        opt = torch.optim.AdamW(params, lr=spec['lr'], weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec['lr'], total_steps=steps, pct_start=.05, anneal_strategy='cos')
        pms = split_prompts(names)
        before = rss_mb(); reset_peak(); t0 = time.time(); model.train()
        for ep in range(epochs):
            for b in loader(ep):
                x = pre.to_model(b)
                if teacher == 'sam': loss = sam_pretrain_loss(model, x, b['sam']['boxes'], b['sam']['masks'], noise=0.)
                else: loss = sum(model(**dino_inputs(x['pixel_values'], x['pixel_mask'], pm), labels=[_prompt_labels(l, pm, 'cpu') for l in b['dino']['labels']]).loss
                                 for pm in pms)  # one prompt per forward: transformers' loss needs the same prompt for the whole batch
                if loss is None: sched.step(); continue
                opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.); opt.step(); sched.step(); losses.append(float(loss))
        secs, peak = time.time() - t0, peak_mb()
    model.eval()
    tk = {'sam': t} if teacher == 'sam' else {'dino': t}
    ds = CocoDataset(test_ann, Path(test_ann).parent/'images', masks=teacher == 'sam', preprocess=[pre])
    ev = score_predictions(predict_coco(tk, ds, batch_size=4, dev='cpu'), gt)
    return spec | dict(metrics={r['metric']: r['tuned'] for r in ev.rows}, trainable=n_train, total=total, seconds=round(secs, 1),
                       peak_mb=round(peak, 1), before_mb=round(before, 1), last_loss=losses[-1] if losses else None,
                       digest=fingerprint(*params) if params else None, threads=torch.get_num_threads(), cpu=cpu_name())


def cpu_name()->str:
    "The CPU model and its widest vector instructions: kernels (and float rounding) differ between AVX2 and AVX-512."
    info = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    name = next((l.split(':', 1)[1].strip() for l in info.splitlines() if l.startswith('model name')), 'unknown')
    return name + (' (AVX-512)' if 'avx512f' in info else ' (AVX2)' if 'avx2' in info else '')


def run_sub(spec, *args, threads=2):
    "`finetune(spec, *args)` in a fresh Python process (its own peak memory); its result."
    cmd = [sys.executable, __file__, '--threads', str(threads), '--one', json.dumps([spec, *[str(a) if isinstance(a, Path) else a for a in args]])]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {'PYTHONWARNINGS': 'ignore'})
    if out.returncode: sys.exit(f"run {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def label(s:dict)->str:
    "A run's name in the tables: 'zero-shot', 'full lr 5e-4', 'LoRA r=8 encoder:1+head'."
    if s['mode'] == 'zero-shot': return 'zero-shot'
    if s['mode'] == 'full': return f"full lr {s['lr']:g}"
    return (f"LoRA r={s['r']} {s['scope']}" + ('+box head' if s['heads'] and s['teacher'] == 'dino' else '+heads' if s['heads'] else '')
            + (f" lr {s['lr']:g}" if s['lr'] != LORA_LR else ''))


def share(r, zero, full):
    "Share of the full fine-tuning gain that run `r` recovers."
    return (r - zero) / (full - zero) if full != zero else float('nan')


class Results:
    "The study's runs in a JSON file, written after every run: an interrupted study resumes where it stopped."
    def __init__(self, path, settings): self.path, self.settings = Path(path), settings; self.rows = self._read()
    @classmethod
    def load(cls, path): return cls(path, json.loads(Path(path).read_text())['settings'])
    def _read(self):
        if not self.path.is_file(): return []
        d = json.loads(self.path.read_text())
        return d['rows'] if d.get('settings') == self.settings and d.get('schema') == 2 else []
    def get(self, spec): return next((r for r in self.rows if r.get('repro') == spec.get('repro') and all(r.get(k) == v for k, v in spec.items())), None)
    def run(self, spec, *args, threads=2, say=True):
        r = self.get(spec)
        if r is None:
            r = run_sub(spec, *args, threads=threads); self.rows.append(r); self.save()
            if say: print(f"{r['teacher']:5} {label(r):28} seed {r['seed']}  {json.dumps({k: round(v, 4) for k, v in r['metrics'].items()})}  "
                          f"trainable {r['trainable']:,}  {r['seconds']:.0f}s  peak {r['peak_mb']:.0f} MB", flush=True)
        return r
    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True); tmp = self.path.with_suffix('.tmp')
        tmp.write_text(json.dumps(dict(schema=2, settings=self.settings, rows=self.rows), indent=1)); os.replace(tmp, self.path)


SCOPES = dict(sam=[('decoder', False), ('encoder:1', False), ('encoder:2', False), ('encoder:all', False)],
              dino=[('decoder', False), ('decoder', True), ('encoder:1', False), ('encoder:1', True)])
FULL_LRS = (2e-4, 5e-4, 1e-3, 2e-3)  # full fine-tuning's own sweep, the best kept (the baseline is never weakened)
LORA_LR, SEEDS = 1e-3, (0, 1, 2)
LORA_LRS = (3e-3, 1e-2)  # the best scope at higher learning rates too (seed 0): is LoRA short of steps rather than of reach?


def summary(res:Results, teacher:str)->list:
    "Per configuration (seeds pooled): label, spec, the per-seed rows, and the shares of the full fine-tuning gain per seed."
    m1, m2 = TEACHERS[teacher][1:]
    rows = [r for r in res.rows if r['teacher'] == teacher and r['threads'] == res.settings['threads'] and not r.get('repro')]
    if not any(r['mode'] == 'zero-shot' for r in rows) or not any(r['mode'] == 'full' and r['seed'] == 0 for r in rows): return []  # not run yet
    zero = next(r for r in rows if r['mode'] == 'zero-shot')['metrics']
    full = best_full(res, teacher)
    fm = {m: sum(r['metrics'][m] for r in full) / len(full) for m in (m1, m2)}
    out = {}
    for r in rows: out.setdefault(label(r), []).append(r)
    return [dict(label=k, runs=v, share={m: [share(r['metrics'][m], zero[m], fm[m]) for r in v] for m in (m1, m2)}) for k, v in out.items()]


def best_full(res, teacher):
    "The full fine-tuning runs (every seed) at the learning rate that scored best on seed 0 (both metrics, summed)."
    m1, m2 = TEACHERS[teacher][1:]
    sweep = [r for r in res.rows if r['teacher'] == teacher and r['mode'] == 'full' and r['seed'] == 0 and not r.get('repro')]
    lr = max(sweep, key=lambda r: r['metrics'][m1] + r['metrics'][m2])['lr']
    return [r for r in res.rows if r['teacher'] == teacher and r['mode'] == 'full' and r['lr'] == lr and not r.get('repro')]


def spread(v:list, fmt='{:.3f}')->str:
    "mean (min–max) of a list of numbers."
    return fmt.format(sum(v) / len(v)) + (f" ({fmt.format(min(v))}–{fmt.format(max(v))})" if len(v) > 1 else '')


def best_scope(res, teacher):
    "The r=8 scope with the highest worse-of-two share (mean over seeds): what r=4 and r=16 are tried on."
    m1, m2 = TEACHERS[teacher][1:]
    c = [s for s in summary(res, teacher) if s['label'].startswith('LoRA r=8') and s['runs'][0]['lr'] == LORA_LR]
    b = max(c, key=lambda s: min(sum(s['share'][m]) / len(s['share'][m]) for m in (m1, m2)))['runs'][0]
    return b['scope'], b['heads']


HEAD = ['teacher', 'run', 'seeds', 'metric 1', 'metric 2', 'share of full-FT gain (1 / 2)', 'trainable (% of model)', 'train time (s)', 'peak memory (MB)']

def table_rows(res:Results)->tuple:
    "The study table's rows (cells as text, seeds pooled: mean (min–max)) and, per teacher, the LoRA run with the best worse-of-two share."
    rows, best = [], {}
    for t, (title, m1, m2) in TEACHERS.items():
        if not any(r['teacher'] == t for r in res.rows): continue
        for c in summary(res, t):
            rs = c['runs']; r0 = rs[0]; lora = r0['mode'] == 'lora'
            sh = f"{spread([100 * x for x in c['share'][m1]], '{:.0f}%')} / {spread([100 * x for x in c['share'][m2]], '{:.0f}%')}" if lora else ''
            rows.append([title, c['label'], len(rs), f"{m1} {spread([r['metrics'][m1] for r in rs])}", f"{m2} {spread([r['metrics'][m2] for r in rs])}", sh,
                         f"{r0['trainable']:,} ({100 * r0['trainable'] / r0['total']:.2f}%)" if r0['trainable'] else '',
                         spread([r['seconds'] for r in rs], '{:.0f}') if r0['trainable'] else '', spread([r['peak_mb'] for r in rs], '{:.0f}') if r0['trainable'] else ''])
            worse = min(sum(c['share'][m]) / len(rs) for m in (m1, m2))
            if lora and worse > best.get(t, (-1e9,))[0]: best[t] = (worse, c['label'], c)
    return rows, best


def report(res:Results):
    "The study's table (markdown) and its headline."
    s = res.settings
    print(f"\ntarget shapes domain: {s['train_images']} training images, {s['epochs']} epochs, batch 4; 48 held-out test images. "
          f"LoRA lr {LORA_LR:g} (the best scope also at {'/'.join(f'{x:g}' for x in LORA_LRS)}, seed 0), full fine-tuning lr swept {'/'.join(f'{x:g}' for x in FULL_LRS)} (seed 0) and the best kept; "
          f"one-cycle cosine; seeds {', '.join(map(str, SEEDS))}; {s['device']}, {s['threads']} threads\n")
    rows, best = table_rows(res)
    print('| ' + ' | '.join(HEAD) + ' |\n|' + '---|' * len(HEAD))
    for r in rows: print('| ' + ' | '.join(map(str, r)) + ' |')
    print('\nlora_vs_full: the LoRA run with the best worse-of-two share of the full fine-tuning gain (mean over its seeds): '
          + '; '.join(f"{TEACHERS[t][0]} {l} {100 * w:.0f}% ({len(c['runs'])} seed(s), {100 * c['runs'][0]['trainable'] / c['runs'][0]['total']:.1f}% of the tiny model trainable)"
                      for t, (w, l, c) in best.items()))


REPRO_HEAD = ['Grounding DINO full fine-tuning, seed 0', 'threads', 'CPU', 'box AP50', 'box AP', 'trained weights']

def repro(res, args, teacher='dino'):
    "Full fine-tuning run again: same seed and threads (bit-identical?), and with 1 thread (other kernels, other float rounding)."
    r0 = next(r for r in best_full(res, teacher) if r['seed'] == 0)
    spec = {k: r0[k] for k in ('teacher', 'mode', 'lr', 'seed')}
    runs = [('first run', r0), ('run again', res.run(spec | dict(repro='again'), *args, threads=res.settings['threads'])),
            ('run with 1 thread', res.run(spec | dict(repro='1 thread'), *args, threads=1))]
    m1, m2 = TEACHERS[teacher][1:]
    return [[n, r['threads'], r['cpu'], f"{r['metrics'][m1]:.3f}", f"{r['metrics'][m2]:.3f}",
             ('identical to the first' if r['digest'] == r0['digest'] else 'differ') + f" ({r['digest'][:8]})"] for n, r in runs]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--one', help=argparse.SUPPRESS)
    ap.add_argument('--work', default='/tmp/teacher_lora_lora_vs_full')
    ap.add_argument('--train-images', type=int, default=64); ap.add_argument('--epochs', type=int, default=8)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default='benchmarks/results/lora_vs_full.json', help='the runs, written after each one (a stopped study resumes)')
    ap.add_argument('--teachers', default='sam,dino')
    ap.add_argument('--report', action='store_true', help='print the tables from --json, run nothing')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.one: print(json.dumps(finetune(*json.loads(a.one)))); return
    from teacher_lora.test_utils import shapes_domain
    res = Results(a.json, dict(train_images=a.train_images, epochs=a.epochs, threads=a.threads, device='cuda' if torch.cuda.is_available() else 'cpu'))
    if not a.report:
        work = Path(a.work)
        args = (shapes_domain(work/'target_train', a.train_images, 'target', seed=300),
                shapes_domain(work/'target_test', 48, 'target', seed=200), a.epochs, 4)  # the pretraining script's target split
        for t in a.teachers.split(','):
            res.run(dict(teacher=t, mode='zero-shot', seed=0), *args)
            for lr in FULL_LRS: res.run(dict(teacher=t, mode='full', lr=lr, seed=0), *args)
            lr = best_full(res, t)[0]['lr']
            for seed in SEEDS:
                res.run(dict(teacher=t, mode='full', lr=lr, seed=seed), *args)
                for scope, heads in SCOPES[t]: res.run(dict(teacher=t, mode='lora', scope=scope, heads=heads, r=8, lr=LORA_LR, seed=seed), *args)
            scope, heads = best_scope(res, t)
            for r in (4, 16):
                for seed in SEEDS: res.run(dict(teacher=t, mode='lora', scope=scope, heads=heads, r=r, lr=LORA_LR, seed=seed), *args)
            for lr in LORA_LRS: res.run(dict(teacher=t, mode='lora', scope=scope, heads=heads, r=8, lr=lr, seed=0), *args)
        if 'dino' in a.teachers: repro(res, args)
    if any(r.get('repro') for r in res.rows):
        print('\n| ' + ' | '.join(REPRO_HEAD) + ' |\n|' + '---|' * len(REPRO_HEAD))
        for r in repro(res, ()): print('| ' + ' | '.join(map(str, r)) + ' |')
    report(res)


if __name__ == '__main__':
    main()
