"""Training cost on real-size teachers (random weights; CPU; small inputs so it fits this machine).

(a) full fine-tuning vs LoRA: time of one optimiser step and peak memory (each case in a fresh process,
    peak resident memory from getrusage), for Grounding DINO (Swin-T + BERT-base) and SAM ViT-B;
(b) LoRA epoch time without vs with the frozen-feature cache (epochs 2+), through the library's own
    `SamTask` / `DinoTask` training path.
(c) with --sweep 1,8,16,32,64 (only this section): a SAM ViT-B decoder-only LoRA step on a cached embedding at
    `--sam-epoch-size` (1024) against the number of box prompts in it, each count in a fresh process: step time
    and peak resident memory above the loaded model. This is what `sam.max_prompts` caps (prompts per step =
    train.batch_size x min(instances, max_prompts)).
(d) with --scopes sam,dino (only this section): per teacher, full fine-tuning against LoRA on each `lora_scope`
    (decoder, the box head, the last K encoder layers): trainable parameters, adapter size, epoch time with the
    partial feature cache (epochs 2-3) against full fine-tuning's, and peak memory, through the library's training path.
Targets: LoRA peak memory <= 40% of full fine-tuning for each teacher; cached SAM epochs >= 20x and
cached Grounding DINO epochs >= 2x faster.

    python benchmarks/train_step.py [--dino-size 512] [--sam-size 512] [--sam-epoch-size 1024] [--images 4]
    python benchmarks/train_step.py --sweep 1,8,16,32,64
    python benchmarks/train_step.py --scopes sam,dino [--images 4]

Sizes: full fine-tuning of SAM ViT-B at its native 1024 px does not fit this machine's 24 GB, so (a) runs SAM at
512 px; (b) runs SAM at 1024 px, the input every Meta checkpoint uses. Grounding DINO runs at 512 px (its default is
800): below that its fixed 900-query decoder, which LoRA trains, dominates both memory and time.
"""
import argparse, json, resource, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')

def real_dino():
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection
    import torch; torch.manual_seed(0)
    return GroundingDinoForObjectDetection(GroundingDinoConfig())  # grounding-dino-tiny: Swin-T + BERT-base, 172M parameters

def real_sam(size):
    from teacher_lora.teachers import build_sam, SAM_CONFIGS
    import torch; torch.manual_seed(0)
    return build_sam(**SAM_CONFIGS['vit_b'], img_size=size)

def data(n, tmp, dino_size, sam_size):
    from teacher_lora.test_utils import shapes_dataset
    from teacher_lora.data import CocoDataset, DinoPreprocess, SamPreprocess, collate
    ann = shapes_dataset(Path(tmp)/'shapes', n, seed=0, background='plain', scale=(.3, .55), sizes=((320, 240), (240, 320)))
    ds = CocoDataset(ann, Path(tmp)/'shapes'/'images', masks=True, preprocess=[DinoPreprocess(dino_size, dino_size * 4 // 3), SamPreprocess(sam_size)])
    return ds, collate

def rss_mib(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def task_for(teacher, lora, args):
    "(task, trainable parameters) for `teacher`, with LoRA adapters or fully trainable."
    from teacher_lora.cache import FeatureCache, train_mode
    from teacher_lora.tasks import SamTask, DinoTask
    from teacher_lora.teachers import apply_lora, SAM_LORA_TARGETS, DINO_LORA_TARGETS
    from teacher_lora.data import DinoPreprocess
    cache = FeatureCache(args.cache)
    if teacher == 'sam':
        m = real_sam(args.sam_size)
        m = apply_lora(m, SAM_LORA_TARGETS) if lora else m
        t = SamTask(m, cache)
    else:
        m = real_dino()
        m = apply_lora(m, DINO_LORA_TARGETS) if lora else m
        t = DinoTask(m, cache, ['circle', 'square', 'triangle'], [1, 2, 3], DinoPreprocess(args.dino_size, args.dino_size * 4 // 3))
    return t, [p for p in train_mode(t.net).parameters() if p.requires_grad]

def full_loss(t, teacher, batch):
    "Full fine-tuning: the whole model in the graph (encoders included)."
    import torch
    from teacher_lora.losses import sam_loss
    from teacher_lora.teachers import sam_decode, dino_inputs
    if teacher == 'sam':
        idx = [i for i, b in enumerate(batch['sam']['boxes']) if len(b)]  # images with objects
        emb = t.sam.image_encoder(t.pre.to_model(batch))[idx]
        outs = sam_decode(t.sam, emb, [batch['sam']['boxes'][i] for i in idx])
        return sam_loss(torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs]), torch.cat([batch['sam']['masks'][i] for i in idx]))['loss']
    inp = t.pre.to_model(batch)
    return t.dino(**dino_inputs(inp['pixel_values'], inp['pixel_mask'], t.prompts[0]), labels=batch['dino']['labels']).loss

def case_step(args):
    "One process: steps of full fine-tuning or LoRA for one teacher; prints step time and peak memory."
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        ds, collate = data(args.batch, tmp, args.dino_size, args.sam_size)
        batch = collate([ds[i] for i in range(args.batch)])
        t, params = task_for(args.teacher, args.mode == 'lora', args)
        before = rss_mib()
        opt = torch.optim.AdamW(params, lr=1e-5)
        times = []
        for i in range(args.steps + 1):
            t0 = time.perf_counter()
            loss = t.loss(t.net, batch, 0, 'cpu')['loss'] if args.mode == 'lora' else full_loss(t, args.teacher, batch)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            if i: times.append(time.perf_counter() - t0)  # the first step warms up
    print(json.dumps(dict(step_s=statistics.median(times), peak_mib=rss_mib(), model_mib=before, trainable=sum(p.numel() for p in params))))

def case_epochs(args):
    "One process: LoRA epochs through the training path, with the given cache mode; prints epoch times."
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        ds, collate = data(args.images, tmp, args.dino_size, args.sam_size)
        t, params = task_for(args.teacher, True, args)
        opt = torch.optim.AdamW(params, lr=1e-5)
        batches = [list(range(i, min(i + args.batch, len(ds)))) for i in range(0, len(ds), args.batch)]
        items = [ds[i] for i in range(len(ds))]  # decoded once: the comparison is about the model, not the image files
        times = []
        for e in range(3):
            t0 = time.perf_counter()
            for b in batches:
                t.loss(t.net, collate([items[i] for i in b]), 0, 'cpu')['loss'].backward(); opt.step(); opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    print(json.dumps(dict(epoch1_s=times[0], epoch_s=statistics.mean(times[1:]), cache=repr(t.cache))))

def case_prompts(args):
    "One process: a SAM decoder-only LoRA step (prompt encoder + mask decoder, loss, backward, AdamW) on a cached embedding with `args.prompts` boxes."
    import torch
    from teacher_lora.teachers import apply_lora, sam_decode, SAM_LORA_TARGETS
    from teacher_lora.losses import sam_loss
    from teacher_lora.cache import train_mode
    m = train_mode(apply_lora(real_sam(args.sam_size), SAM_LORA_TARGETS))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
    g, s = torch.Generator().manual_seed(0), args.sam_size; e = s // 16
    emb = torch.randn(1, 256, e, e, generator=g)  # what the cache holds for one image
    xy = torch.rand(args.prompts, 2, generator=g) * s * .7; boxes = torch.cat([xy, xy + torch.rand(args.prompts, 2, generator=g) * s * .3 + 8], 1)
    target = (torch.rand(args.prompts, 4 * e, 4 * e, generator=g) > .5).float()
    before = rss_mib(); t0 = time.perf_counter()
    (lg, iou), = sam_decode(m, emb, [boxes]); sam_loss(lg, iou, target)['loss'].backward(); opt.step()
    print(json.dumps(dict(prompts=args.prompts, step_s=time.perf_counter() - t0, peak_mib=rss_mib(), model_mib=before)))

def sweep(a):
    "(c): peak memory and time of a SAM step against its prompt count; a least-squares line through the points."
    ns = [int(x) for x in a.sweep.split(',')]
    print(f"(c) SAM ViT-B decoder-only LoRA step on a cached {a.sam_epoch_size} px embedding (random weights, CPU, fp32), each count in a fresh process")
    print(f"{'prompts':>8}{'step s':>9}{'peak MiB':>10}{'model MiB':>11}{'step MiB':>10}")
    rs = []
    for n in ns:
        r = sub(case='prompts', prompts=n, sam_size=a.sam_epoch_size); r['step_mib'] = r['peak_mib'] - r['model_mib']; rs.append(r)
        print(f"{n:>8}{r['step_s']:>9.2f}{r['peak_mib']:>10.0f}{r['model_mib']:>11.0f}{r['step_mib']:>10.0f}")
    fit = lambda k: statistics.linear_regression([r['prompts'] for r in rs], [r[k] for r in rs])
    mem, t = fit('step_mib'), fit('step_s')
    print(f"per prompt: {mem.slope:.1f} MiB and {t.slope:.2f} s (step = {mem.intercept:.0f} MiB + {mem.slope:.1f} MiB x prompts; "
          f"{t.intercept:.2f} s + {t.slope:.2f} s x prompts)")
    for cap in (16, 32, 64):
        print(f"  sam.max_prompts={cap}, train.batch_size=4: up to {4 * cap} prompts per step, ~{(mem.intercept + mem.slope * 4 * cap) / 1024:.1f} GiB of step memory (fp32)")

SCOPES = dict(sam=['decoder', 'encoder:1', 'encoder:2', 'encoder:4'], dino=['decoder', 'decoder+box', 'encoder:1', 'encoder:2'])

def case_scope(args):
    "One process: epochs of one teacher through the training path, `args.scope` ('full': every weight, no cache; else LoRA on that scope, memory cache)."
    import torch
    from teacher_lora.cache import FeatureCache, train_mode, fingerprint
    from teacher_lora.tasks import SamTask, DinoTask
    from teacher_lora.teachers import apply_lora, lora_targets
    from teacher_lora.data import DinoPreprocess
    full, scope, box = args.scope == 'full', args.scope.removesuffix('+box'), args.scope.endswith('+box')
    m = real_sam(args.sam_size) if args.teacher == 'sam' else real_dino()
    n = len(m.image_encoder.blocks) if args.teacher == 'sam' else m.config.encoder_layers
    if not full: m = apply_lora(m, lora_targets(args.teacher, scope, n, box))
    cache = FeatureCache('off' if full else 'memory')
    t = SamTask(m, cache) if args.teacher == 'sam' else DinoTask(m, cache, ['circle', 'square', 'triangle'], [1, 2, 3], DinoPreprocess(args.dino_size, args.dino_size * 4 // 3))
    params = [p for p in train_mode(t.net if not full else m).parameters() if p.requires_grad]
    with tempfile.TemporaryDirectory() as tmp:
        ds, collate = data(args.images, tmp, args.dino_size, args.sam_size)
        items = [ds[i] for i in range(len(ds))]
        batches = [items[i:i + args.batch] for i in range(0, len(items), args.batch)]
        opt, times = torch.optim.AdamW(params, lr=1e-5), []
        for e in range(2 if full else 3):  # full: epoch 1 warms up, every epoch costs the same; LoRA: epoch 1 fills the cache
            t0 = time.perf_counter()
            for b in batches:
                b = collate(b)
                (full_loss(t, args.teacher, b) if full else t.loss(t.net, b, 0, 'cpu')['loss']).backward(); opt.step(); opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    print(json.dumps(dict(epoch1_s=times[0], epoch_s=statistics.mean(times[1:]), peak_mib=rss_mib(), trainable=sum(p.numel() for p in params),
                          cache_mib=cache.nbytes / 2**20, adapter_mb=0 if full else sum(p.numel() for p in params) * 2 / 1e6)))  # adapters saved in fp16

def scopes(a):
    "(d) per teacher: full fine-tuning against LoRA on each scope, epochs through the training path, each in a fresh process."
    print(f"(d) LoRA scopes vs full fine-tuning: {a.images} images, batch {a.batch}; SAM ViT-B at {a.sam_size} px, Grounding DINO at {a.dino_size} px; "
          "random weights, CPU, fp32; each row a fresh process (peak = its peak resident memory, model included)")
    print(f"{'teacher':<8}{'scope':<13}{'trainable':>12}{'adapter MB':>11}{'epoch 1 s':>10}{'epoch 2+ s':>11}{'x faster':>9}{'peak MiB':>9}{'of full':>8}{'cache MiB':>10}")
    head = []
    for t in a.scopes.split(','):
        full = None
        for sc in ['full'] + SCOPES[t]:
            r = sub(case='scope', teacher=t, scope=sc, images=a.images, batch=a.batch, dino_size=a.dino_size, sam_size=a.sam_size)
            full = full or r
            fast, mem = full['epoch_s'] / r['epoch_s'], r['peak_mib'] / full['peak_mib']
            print(f"{t:<8}{sc:<13}{r['trainable']:>12,}{r['adapter_mb']:>11.2f}{r['epoch1_s']:>10.1f}{r['epoch_s']:>11.1f}{fast:>8.1f}x{r['peak_mib']:>9.0f}{mem:>8.0%}{r['cache_mib']:>10.1f}", flush=True)
            if sc.startswith('encoder:1'): head.append(f"{t} encoder:1 cached epochs {fast:.1f}x faster than full fine-tuning, peak memory {mem:.0%} of it")
    print('\ntrain_step --scopes: ' + '; '.join(head))

def sub(**kw):
    a = [sys.executable, __file__] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    r = subprocess.run(a, capture_output=True, text=True)
    if r.returncode: sys.exit(f"{' '.join(a)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--case'); p.add_argument('--teacher'); p.add_argument('--mode'); p.add_argument('--cache', default='off')
    p.add_argument('--dino-size', type=int, default=512); p.add_argument('--sam-size', type=int, default=512)
    p.add_argument('--sam-epoch-size', type=int, default=1024)
    p.add_argument('--prompts', type=int, default=1); p.add_argument('--sweep', default='')
    p.add_argument('--scope', default='decoder'); p.add_argument('--scopes', default='', help='(d) only: LoRA scopes vs full fine-tuning for these teachers, e.g. sam,dino')
    p.add_argument('--batch', type=int, default=2); p.add_argument('--steps', type=int, default=2); p.add_argument('--images', type=int, default=4)
    a = p.parse_args()
    if a.case == 'step': return case_step(a)
    if a.case == 'epochs': return case_epochs(a)
    if a.case == 'prompts': return case_prompts(a)
    if a.case == 'scope': return case_scope(a)
    if a.sweep: return sweep(a)
    if a.scopes: return scopes(a)
    sz = dict(dino_size=a.dino_size, sam_size=a.sam_size, batch=a.batch)
    print(f"real-size teachers, random weights, CPU; Grounding DINO at {a.dino_size} px; batch {a.batch}")
    print(f"\n(a) one optimiser step, full fine-tuning vs LoRA (each in a fresh process); SAM ViT-B at {a.sam_size} px")
    print(f"{'teacher':<8}{'mode':<6}{'trainable':>13}{'step s':>9}{'peak MiB':>10}{'model MiB':>11}")
    step = {}
    for t in ('dino', 'sam'):
        for m in ('full', 'lora'):
            r = step[t, m] = sub(case='step', teacher=t, mode=m, **sz)
            print(f"{t:<8}{m:<6}{r['trainable']:>13,}{r['step_s']:>9.2f}{r['peak_mib']:>10.0f}{r['model_mib']:>11.0f}")
    print(f"\n(b) LoRA epoch ({a.images} images), recomputing the frozen encoders vs the feature cache; epochs 2-3; SAM at {a.sam_epoch_size} px")
    print(f"{'teacher':<8}{'cache':<8}{'epoch 1 s':>10}{'epoch 2+ s':>11}")
    ep = {}
    for t in ('dino', 'sam'):
        for c in ('off', 'memory'):
            r = ep[t, c] = sub(case='epochs', teacher=t, cache=c, images=a.images, **(sz | dict(sam_size=a.sam_epoch_size)))
            print(f"{t:<8}{c:<8}{r['epoch1_s']:>10.2f}{r['epoch_s']:>11.2f}")
    mem = {t: step[t, 'lora']['peak_mib'] / step[t, 'full']['peak_mib'] for t in ('dino', 'sam')}
    speed = {t: ep[t, 'off']['epoch_s'] / ep[t, 'memory']['epoch_s'] for t in ('dino', 'sam')}
    ok = mem['dino'] <= .4 and mem['sam'] <= .4 and speed['sam'] >= 20 and speed['dino'] >= 2
    print(f"\ntargets: LoRA peak memory <= 40% of full; cache speedup SAM >= 20x, DINO >= 2x: {'PASS' if ok else 'FAIL'}")
    print(f"LoRA/full peak memory: DINO {mem['dino']:.0%}, SAM {mem['sam']:.0%}; cache speedup: SAM {speed['sam']:.1f}x, DINO {speed['dino']:.1f}x")

if __name__ == '__main__': main()
