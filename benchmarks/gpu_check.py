"""The prepared GPU check: real-size teachers' training memory and speed in bf16, loss stability, labelling throughput.

One run on a CUDA machine, within an 8-minute budget (`--budget`), measures with random weights (memory and speed do not
depend on weight values; no weights can be downloaded):
- Grounding DINO-T (`GroundingDinoConfig()` = grounding-dino-tiny, 172M parameters) at 800x1333, batch 4, a 10-class
  prompt, 10 boxes per image; SAM ViT-B at 1024, batch 4, 10 box prompts per image;
- per teacher: LoRA steps without the frozen-feature cache (encoders run under no_grad every step), with it (epoch 1 fills
  the cache, the measured steps are decoder-only), and full fine-tuning (OOM is reported as such). Each step is the
  library's own `train.train_step` (accelerate's bf16 autocast) plus clipping and an AdamW update; full fine-tuning uses
  benchmarks/train_step.py's `full_loss`. Per case: peak GPU memory over the whole case (cache filling included) and
  after warm-up, and the mean step time after warm-up (`torch.cuda.synchronize` around each step);
- 20 cached LoRA steps per teacher in bf16: the losses' first/last and whether all are finite;
- labelling throughput (images/s) of DINO -> SAM through `predict.label_images` on a folder of generated ~800x600
  images (fp32 as the library runs it, then under bf16 autocast).
The goal it checks: both teachers' LoRA training within 12 GiB at default sizes (judged on the allocator's reserved
peak, which is what the GPU must have free; the CUDA context, ~0.5 GiB, comes on top). Each section is skipped with a
note when the budget would be exceeded; an exception in one is reported in its row and the others go on. The table is
printed, written as JSON to `--out` after every section, and the last line gives the headline figures.

On a lent GPU machine (it gets a copy of the working tree; it cannot reach a package registry):

    python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"
    python -c "import transformers, peft, accelerate, scipy, yaml, segment_anything, pycocotools, fastcore, orjson"

Keep the machine's own CUDA build of torch/torchvision: do not `pip install torch==2.14.1 torchvision==0.29.1` there
(that pin is for the CPU machines). Packages it lacks (the nvidia-h200 image has torch, transformers, peft, accelerate,
scipy, but not segment-anything, pycocotools, fastcore, orjson) travel as wheels: on this machine, in the repo root,
`echo /.whl/ >> .git/info/exclude` and `pip download --no-deps --only-binary=:all: --python-version 3.12
--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl segment-anything pycocotools fastcore orjson`
(see /work/.library/device/README.md); then, carrying `.whl`, one call:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

(`PYTHONPATH=.` stands in for `pip install -e .`, which needs no network either with `--no-deps --no-build-isolation`.)

    python benchmarks/gpu_check.py --dry-run    # the same code paths on CPU, tiny teachers and sizes, 2-3 steps: ~70 s of CPU time (2-3 min wall on a busy 2-core machine)

`--device cpu` with `--dino-size/--dino-longest/--sam-size/--steps` runs the real-size teachers on the CPU at small
inputs (a shape check of the real-size path; fp32, as bf16 on CPUs is many times slower).
"""
import argparse, gc, json, math, os, platform, shutil, statistics, sys, tempfile, time, traceback, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks' own helpers
import torch
from train_step import real_dino, real_sam, full_loss  # real-size teachers, random weights; the full fine-tuning loss
warnings.filterwarnings('ignore')
from teacher_lora.coco import inspect_dataset
from teacher_lora.config import generate_config
from teacher_lora.data import CocoDataset, DinoPreprocess, SamPreprocess, collate
from teacher_lora.predict import label_images
from teacher_lora.teachers import DINO_LORA_TARGETS, SAM_LORA_TARGETS, apply_lora, load_dino, load_sam
from teacher_lora.test_utils import shapes_dataset
from teacher_lora.cache import FeatureCache, TrainError, train_mode
from teacher_lora.tasks import DinoTask, SamTask
from teacher_lora.train import make_accelerator, train_step

GOAL_GIB = 12
CLASSES = ('person', 'car', 'traffic light', 'dog', 'bicycle', 'fire hydrant', 'stop sign', 'potted plant', 'backpack', 'umbrella')
# each section's worst expected time on an H200, seconds: skipped when less than this is left of the budget
COST = dict(dino_lora=40, dino_cache=45, sam_lora=30, sam_cache=30, label=60, label_bf16=40, dino_full=45, sam_full=40)


def settings(a)->dict:
    "Sizes and step counts: real (defaults of the library) or tiny (`--dry-run`); `--dino-size` etc. override."
    s = dict(dino=(800, 1333), sam=1024, img=((1333, 800),), label_img=((800, 600), (600, 800)), n_train=8, n_label=24, label_warm=4,
             batch=4, boxes=10, classes=len(CLASSES), warmup=2, steps=dict(lora=6, cache=20, full=4), workers=4)
    if a.dry_run:
        s |= dict(dino=(128, 213), sam=256, img=((320, 192),), label_img=((240, 180), (180, 240)), n_train=4, n_label=4, label_warm=1,
                  batch=2, boxes=5, warmup=1, steps=dict(lora=2, cache=2, full=1), workers=0)
    if a.dino_size: s['dino'] = (a.dino_size, a.dino_longest or a.dino_size * 5 // 3)
    if a.sam_size: s['sam'] = a.sam_size
    if a.batch: s['batch'] = a.batch
    if a.steps: s['steps'] = dict.fromkeys(s['steps'], a.steps)
    if a.warmup is not None: s['warmup'] = a.warmup
    return s


# ---- memory and time
def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def reset_peak(dev):
    "Restart the peak-memory count: the CUDA allocator's, or the kernel's resident high-water mark on a CPU."
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev); return
    try: open('/proc/self/clear_refs', 'w').write('5')
    except OSError: pass  # then the CPU peak is the process's

def peak(dev)->dict:
    "Peak memory since `reset_peak`, GiB: allocated tensors and the allocator's reserved memory (CPU: resident set)."
    if dev.type == 'cuda': return dict(alloc=torch.cuda.max_memory_allocated(dev) / 2**30, reserved=torch.cuda.max_memory_reserved(dev) / 2**30)
    kb = next((int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')), 0)
    return dict(alloc=kb / 2**20, reserved=kb / 2**20)

def free(dev):
    gc.collect()
    if dev.type == 'cuda': torch.cuda.empty_cache()

def timed(step, n_warm:int, n:int, dev, cap:float, losses:list)->dict:
    "Run `step()` (returns the loss, appended to `losses`) `n_warm` + `n` times: peak memory (whole and after warm-up), mean time of the measured steps."
    reset_peak(dev); times, t_start, note = [], time.time(), ''
    whole = dict(alloc=0., reserved=0.)
    for i in range(n_warm + n):
        if times and time.time() - t_start > cap: note = f"stopped after {len(times)} of {n} measured steps (time guard)"; break
        if i == n_warm: whole = peak(dev); reset_peak(dev)
        sync(dev); t0 = time.perf_counter(); losses.append(step()); sync(dev)
        if i >= n_warm: times.append(time.perf_counter() - t0)
    steady = peak(dev)
    return dict(peak_gib=max(whole['alloc'], steady['alloc']), reserved_gib=max(whole['reserved'], steady['reserved']), steady_gib=steady['alloc'],
                step_s=statistics.mean(times) if times else None, steps=len(times), warmup=min(n_warm, len(losses)), note=note)


# ---- data: generated images, 10 classes and 10 boxes per image
def crowded(ann:Path, n_classes:int, per_image:int, seed:int=0)->Path:
    "Rewrite a `shapes_dataset` file with `per_image` rectangle instances per image (a grid, jittered) over `n_classes` classes."
    import numpy as np
    d, rng = json.loads(ann.read_text()), np.random.default_rng(seed)
    d['categories'] = [dict(id=k + 1, name=n, supercategory='thing') for k, n in enumerate(CLASSES[:n_classes])]
    anns, cols = [], math.ceil(per_image / 2)
    for im in d['images']:
        W, H = im['width'], im['height']; cw, ch = W / cols, H / 2
        for j in range(per_image):
            x0, y0 = (j % cols) * cw + rng.uniform(0, .2) * cw, (j // cols) * ch + rng.uniform(0, .2) * ch
            w, h = cw * rng.uniform(.4, .75), ch * rng.uniform(.4, .75)
            anns.append(dict(id=len(anns) + 1, image_id=im['id'], category_id=int(j % n_classes) + 1, bbox=[x0, y0, w, h], area=w * h,
                             iscrowd=0, segmentation=[[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]]))
    d['annotations'] = anns
    out = ann.with_name('crowded.json'); out.write_text(json.dumps(d)); return out


# ---- the checks
class Check:
    "The run: its settings, device, budget, models, rows; each section runs guarded and is recorded."
    def __init__(self, a):
        self.a, self.s, self.t0, self.rows, self.models = a, settings(a), time.time(), [], {}
        self.dev = torch.device('cuda' if a.device == 'cuda' or (a.device == 'auto' and torch.cuda.is_available()) else 'cpu')
        self.tmp, self.env = Path(tempfile.mkdtemp(prefix='gpu_check_')), {}

    def acc_mp(self)->str: return getattr(getattr(self, 'acc', None), 'mixed_precision', 'no')

    def left(self)->float: return self.a.budget - (time.time() - self.t0)

    def section(self, name:str, fn, **row):
        "Run `fn(row)` unless the budget is short; an exception (OOM included) goes into the row, not out of the run."
        row = dict(section=name, **row, status='ok')
        need = COST.get(name, 30) * (0.25 if self.a.dry_run else 1)
        if self.left() < need: row['status'] = f"skipped: {self.left():.0f} s left of the budget, needs ~{need:.0f} s"
        else:
            t = time.time()
            try: fn(row)
            except torch.OutOfMemoryError: row['status'] = 'OOM'
            except TrainError as e: row['status'] = 'OOM' if 'out of GPU memory' in str(e) else f"error: {str(e)[:300]}"
            except Exception as e:
                row['status'] = f"error: {type(e).__name__}: {str(e)[:300]}"
                traceback.print_exc(limit=6, file=sys.stderr)
            row['seconds'] = round(time.time() - t, 1)
        free(self.dev)
        self.rows.append(row); print(fmt_row(row), flush=True); self.write()
        return row

    def write(self):
        if not self.a.out: return
        p = Path(self.a.out); p.parent.mkdir(parents=True, exist_ok=True)
        t = p.with_name(p.name + '.tmp')
        t.write_text(json.dumps(dict(env=self.env, settings=self.s | dict(dry_run=self.a.dry_run, budget_s=self.a.budget, goal_gib=GOAL_GIB),
                                     rows=self.rows, headline=getattr(self, 'headline', None), seconds=round(time.time() - self.t0, 1)), indent=1, default=str))
        os.replace(t, p)

    # setup: environment, data, config, accelerator
    def setup(self):
        from importlib.metadata import version, PackageNotFoundError
        def v(p):
            try: return version(p)
            except PackageNotFoundError: return None
        env = dict(device=torch.cuda.get_device_name(self.dev) if self.dev.type == 'cuda' else f"CPU ({platform.processor() or platform.machine()})",
                   torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if self.dev.type == 'cuda' else None,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(self.dev).total_memory / 2**30, 1) if self.dev.type == 'cuda' else None,
                   python=platform.python_version(), **{p: v(p) for p in ('transformers', 'peft', 'accelerate', 'segment-anything', 'teacher_lora')})
        self.env = env
        s = self.s
        ann = shapes_dataset(self.tmp/'train', s['n_train'], seed=0, background='plain', sizes=s['img'])
        self.ann, self.images = crowded(ann, s['classes'], s['boxes']), self.tmp/'train'/'images'
        sets = [f"train.batch_size={s['batch']}", f"preprocess.dino_shortest={s['dino'][0]}", f"preprocess.dino_longest={s['dino'][1]}",
                f"train.mixed_precision={self.a.mixed_precision}"]
        self.c = generate_config(inspect_dataset(self.ann), sets=sets)
        self.acc = make_accelerator(self.c, self.dev.type)
        env['mixed_precision'] = self.acc.mixed_precision
        print(f"gpu_check on {env['device']}: torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
              f"{env['gpu_memory_gib']} GiB; transformers {env['transformers']}, peft {env['peft']}, accelerate {env['accelerate']}; "
              f"mixed precision {env['mixed_precision']}; budget {self.a.budget:.0f} s", flush=True)
        print(f"DINO {s['dino'][0]}x{s['dino'][1]}, SAM {s['sam']}, batch {s['batch']}, {s['classes']} classes, {s['boxes']} boxes per image; "
              f"{'tiny teachers (dry run)' if self.a.dry_run else 'real-size teachers, random weights'}", flush=True)

    def batches(self, teacher:str)->list:
        "The training set's collated batches for `teacher` (images decoded once: the check is about the model)."
        s = self.s
        pre = DinoPreprocess(*s['dino']) if teacher == 'dino' else SamPreprocess(s['sam'])
        ds = CocoDataset(self.ann, self.images, masks=teacher == 'sam', preprocess=[pre])
        return [collate([ds[i] for i in range(j, j + s['batch'])]) for j in range(0, len(ds) - s['batch'] + 1, s['batch'])]

    def base_model(self, teacher:str):
        "The teacher without adapters, random weights: real size (tiny with `--dry-run`)."
        torch.manual_seed(0)
        if teacher == 'dino': return load_dino('tiny')[0] if self.a.dry_run else real_dino()
        sam = load_sam('tiny') if self.a.dry_run else real_sam(self.s['sam'])
        if sam.image_encoder.img_size != self.s['sam']: raise ValueError(f"SAM input {self.s['sam']} differs from the model's {sam.image_encoder.img_size}")
        return sam

    def model(self, teacher:str):
        "The teacher with LoRA adapters (as `make_task` builds them), built once; on the CPU until a section moves it."
        if teacher not in self.models:
            m = self.c.dino if teacher == 'dino' else self.c.sam
            self.models[teacher] = apply_lora(self.base_model(teacher), DINO_LORA_TARGETS if teacher == 'dino' else SAM_LORA_TARGETS,
                                              m.lora_r, m.lora_alpha, m.lora_dropout)
        return self.models[teacher]

    def on_device(self, *teachers):
        "Only `teachers` on the device (the others back on the CPU): each case's peak holds its own model only."
        for n, m in self.models.items():
            if n not in teachers: m.to('cpu')
        free(self.dev)
        return [self.model(t).to(self.dev) for t in teachers]

    def task(self, teacher:str, cache:str):
        m, = self.on_device(teacher)
        if teacher == 'sam': return SamTask(m, FeatureCache(cache))
        return DinoTask(m, FeatureCache(cache), self.c.dataset.names, self.c.dataset.cat_ids, DinoPreprocess(*self.s['dino']))

    def train(self, row, task, batches, n_warm, n, step_fn=None):
        "Time the library's training step (bf16 autocast on CUDA), clipping and AdamW update on `task`."
        c, acc = self.c, self.acc
        net = train_mode(task.net); params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=c.train.lr, weight_decay=c.train.weight_decay)
        k = iter(range(10**9))
        def step():
            b = batches[next(k) % len(batches)]
            loss = step_fn(b) if step_fn else train_step(task, net, b, acc, True, 1, 'gpu_check', self.tmp/'ck', c)['loss']
            acc.clip_grad_norm_(params, c.train.grad_clip); opt.step(); opt.zero_grad(set_to_none=True)
            return float(loss)
        row['trainable'] = sum(p.numel() for p in params)
        try: row.update(timed(step, n_warm, n, self.dev, max(10., min(COST[row['section']] * 2, self.left() - 20)), row.setdefault('losses', [])))
        finally: opt.zero_grad(set_to_none=True); del opt
        if task.cache.mode != 'off': row['cache'] = repr(task.cache); task.cache.mem.clear()

    def lora(self, teacher:str, cache:bool):
        def run(row):
            bs = self.batches(teacher)
            t = self.task(teacher, 'memory' if cache else 'off')
            n_warm = len(bs) + (self.s['warmup'] > 1) if cache else self.s['warmup']  # cached: the first visit of each batch fills the cache
            self.train(row, t, bs, n_warm, self.s['steps']['cache' if cache else 'lora'])
            row['goal'] = self.goal(row)
        return run

    def goal(self, row)->str:
        if self.dev.type != 'cuda': return 'n/a'
        return 'PASS' if row['reserved_gib'] <= GOAL_GIB else 'FAIL'

    def full(self, teacher:str):
        "Full fine-tuning: every weight trainable (the adapters taken out), the whole model in the graph (`full_loss`)."
        def run(row):
            bs = [to(b, self.dev) for b in self.batches(teacher)]
            self.on_device()  # nothing on the device
            pm = self.models.pop(teacher, None)
            base = pm.unload() if pm is not None else self.base_model(teacher)  # the adapters taken out
            for p in base.parameters(): p.requires_grad_(True)
            base.to(self.dev)
            t = SamTask(base, FeatureCache('off')) if teacher == 'sam' else DinoTask(base, FeatureCache('off'), self.c.dataset.names, self.c.dataset.cat_ids, DinoPreprocess(*self.s['dino']))
            def step(b):
                with self.acc.autocast(): loss = full_loss(t, teacher, b)
                self.acc.backward(loss); return loss.detach()
            try: self.train(row, t, bs, self.s['warmup'], self.s['steps']['full'], step)
            finally: base.to('cpu'); del t, base
        return run

    def label(self, bf16:bool):
        "DINO -> SAM through `label_images` on a folder of generated images: images per second (after a warm-up folder)."
        def run(row):
            if bf16 and self.dev.type != 'cuda' and self.acc_mp() != 'bf16': row['status'] = 'skipped: bf16 autocast only on CUDA (many times slower on CPUs)'; return
            s = self.s
            dino, sam = self.on_device('dino', 'sam'); dino.eval(); sam.eval()
            d = DinoTask(dino, FeatureCache('off'), self.c.dataset.names, self.c.dataset.cat_ids, DinoPreprocess(*s['dino']), max_dets=s['boxes'], threshold=0.)
            d.card = {}  # what `label_images` reads of a loaded teacher: no calibrated thresholds
            ts = dict(dino=d, sam=SamTask(sam, FeatureCache('off')))
            for name, n in (('warm', s['label_warm']), ('timed', s['n_label'])):
                if not (self.tmp/name).exists(): shapes_dataset(self.tmp/name, n, seed=1, sizes=s['label_img'])
            ctx = torch.autocast(self.dev.type, torch.bfloat16, enabled=bf16)
            kw = dict(batch_size=s['batch'], workers=s['workers'], thresholds=dict.fromkeys(self.c.dataset.names, 0.), dev=self.dev.type, progress=False)
            with ctx:
                label_images(ts, self.tmp/'warm'/'images', self.tmp/f"warm-{bf16}.json", **kw)
                reset_peak(self.dev); sync(self.dev); t0 = time.perf_counter()
                out = label_images(ts, self.tmp/'timed'/'images', self.tmp/f"timed-{bf16}.json", **kw)
                sync(self.dev); secs = time.perf_counter() - t0
            n_img = len(out['images'])
            row.update(images=n_img, annotations=len(out['annotations']), masks=sum('segmentation' in x for x in out['annotations']),
                       img_per_s=n_img / secs, seconds_timed=secs, peak_gib=peak(self.dev)['alloc'], reserved_gib=peak(self.dev)['reserved'])
        return run

    def finite(self, teacher:str)->dict:
        "The bf16 stability record of `teacher`'s cached LoRA run: first and last loss, and whether all were finite."
        r = next((r for r in self.rows if r['section'] == f"{teacher}_cache"), {})
        ls = r.get('losses') or []
        st = r.get('status', 'missing')  # a non-finite loss stops the library's step with 'the loss is nan at ...'
        return dict(teacher=teacher, n=len(ls), first=ls[0] if ls else None, last=ls[-1] if ls else None,
                    finite=bool(ls) and all(math.isfinite(l) for l in ls) and st == 'ok', checked=st == 'ok' or 'the loss is' in st, status=st)


def to(x, dev):
    "A collated batch with every tensor on `dev` (for `full_loss`, which takes the batch as it is)."
    if torch.is_tensor(x): return x.to(dev)
    if isinstance(x, dict): return {k: to(v, dev) for k, v in x.items()}
    if isinstance(x, list): return [to(v, dev) for v in x]
    return x

def num(x, d=2): return '-' if x is None else f"{x:.{d}f}"

HEAD = f"{'section':<11}{'teacher':<8}{'case':<18}{'trainable':>12}{'steps':>6}{'step s':>8}{'peak GiB':>9}{'steady':>8}{'reserved':>9}{'12 GiB':>7}  status / note"

def fmt_row(r)->str:
    if r['section'] == 'setup': return f"{'setup':<11}{'':<8}{'':<18}{'':>12}{'':>6}{'':>8}{'':>9}{'':>8}{'':>9}{'':>7}  {r['status']}"
    extra = f"; {r['img_per_s']:.2f} img/s, {r['annotations']} labels ({r['masks']} masks) on {r['images']} images" if 'img_per_s' in r else ''
    note = '; '.join(x for x in (r.get('note'), r.get('cache')) if x)
    tr = format(r['trainable'], ',') if r.get('trainable') else ''
    return (f"{r['section']:<11}{r['teacher']:<8}{r['case']:<18}{tr:>12}{r.get('steps', ''):>6}{num(r.get('step_s'), 3):>8}{num(r.get('peak_gib')):>9}"
            f"{num(r.get('steady_gib')):>8}{num(r.get('reserved_gib')):>9}{r.get('goal', ''):>7}  {r['status']}{extra}{'; ' + note if note else ''}")


def headline(ck:Check)->str:
    "The last line: LoRA peaks per teacher (cached steps after warm-up / no cache), the 12 GiB goal, bf16 losses, labelling throughput."
    row = {r['section']: r for r in ck.rows}
    def gb(sec, key='peak_gib'):
        r = row.get(sec, {})
        return 'OOM' if r.get('status') == 'OOM' else num(r.get(key), 1) if r.get('status') == 'ok' else '-'
    goals = [row.get(f"{t}_{c}", {}).get('goal') for t in ('dino', 'sam') for c in ('lora', 'cache')]
    goal = ('n/a (CPU)' if ck.dev.type != 'cuda' else 'FAIL' if 'FAIL' in goals or any(row.get(f"{t}_{c}", {}).get('status') == 'OOM' for t in ('dino', 'sam') for c in ('lora', 'cache'))
            else 'PASS' if all(g == 'PASS' for g in goals) else 'incomplete')
    fin = [ck.finite(t) for t in ('dino', 'sam')]
    losses = 'finite' if all(f['finite'] for f in fin) else 'NOT finite' if any(f['checked'] and not f['finite'] for f in fin) else 'unchecked'
    mp = 'fp32' if ck.acc_mp() == 'no' else ck.acc_mp()
    lab = row.get('label', {})
    return (f"gpu_check: DINO LoRA peak {gb('dino_cache', 'steady_gib')} GB (cache) / {gb('dino_lora')} GB, "
            f"SAM LoRA {gb('sam_cache', 'steady_gib')} / {gb('sam_lora')} GB, "
            f"{GOAL_GIB} GB goal {goal}; {mp} losses {losses}; "
            f"labelling {num(lab.get('img_per_s'), 1) if lab.get('status') == 'ok' else '-'} img/s")

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dry-run', action='store_true', help='tiny teachers and sizes on the CPU: checks that the script runs (~70 s of CPU time)')
    p.add_argument('--out', help='JSON of the table (default benchmarks/results/gpu_check.json; none with --dry-run)')
    p.add_argument('--device', default='auto', choices=['auto', 'cuda', 'cpu'])
    p.add_argument('--budget', type=float, default=480., help='seconds for the whole check; sections that would exceed it are skipped')
    p.add_argument('--sections', help='comma-separated subset of: ' + ', '.join(COST))
    p.add_argument('--dino-size', type=int); p.add_argument('--dino-longest', type=int); p.add_argument('--sam-size', type=int)
    p.add_argument('--mixed-precision', default='auto', choices=['auto', 'no', 'bf16', 'fp16'],
                   help="train.mixed_precision: auto is bf16 on CUDA, fp32 on a CPU; bf16 on a CPU checks the dtypes of the bf16 path (slow: tiny sizes only)")
    p.add_argument('--batch', type=int); p.add_argument('--steps', type=int, help='measured steps of every case'); p.add_argument('--warmup', type=int)
    a = p.parse_args(argv)
    if a.out is None and not a.dry_run: a.out = str(Path(__file__).resolve().parent/'results'/'gpu_check.json')
    if a.dry_run and a.device == 'auto': a.device = 'cpu'
    ck = Check(a)
    want = set(a.sections.split(',')) if a.sections else set(COST)
    sections = [('dino_lora', 'dino', 'LoRA', ck.lora('dino', False)), ('dino_cache', 'dino', 'LoRA + cache', ck.lora('dino', True)),
                ('sam_lora', 'sam', 'LoRA', ck.lora('sam', False)), ('sam_cache', 'sam', 'LoRA + cache', ck.lora('sam', True)),
                ('label', 'both', 'DINO->SAM fp32', ck.label(False)), ('label_bf16', 'both', 'DINO->SAM bf16', ck.label(True)),
                ('dino_full', 'dino', 'full', ck.full('dino')), ('sam_full', 'sam', 'full', ck.full('sam'))]
    try: ck.setup(); ok = True
    except Exception as e: traceback.print_exc(); ok = False; ck.rows.append(dict(section='setup', status=f"error: {type(e).__name__}: {e}"))
    print('\n' + HEAD, flush=True)
    if ok:
        for name, teacher, case, fn in sections:
            if name in want or (name == 'label_bf16' and 'label' in want): ck.section(name, fn, teacher=teacher, case=case)
    print(f"\npeak GiB: torch.cuda.max_memory_allocated over the whole case (cache filling and warm-up included); steady: after warm-up "
          f"(the headline's cache figure); reserved: the allocator's peak, what the {GOAL_GIB} GiB goal is judged on (CUDA context not counted)"
          if ck.dev.type == 'cuda' else "\npeak/steady/reserved: the process's peak resident memory (CPU run; no GPU figures)")
    mp = 'fp32' if ck.acc_mp() == 'no' else ck.acc_mp()
    print(f"losses ({mp}, cached LoRA steps, warm-up included):")
    for f in ck.finite('dino'), ck.finite('sam'):
        print(f"  {f['teacher']:<5} {f['n']} steps, first {num(f['first'], 4)}, last {num(f['last'], 4)}, finite {'yes' if f['finite'] else 'no'}"
              + ('' if f['status'] == 'ok' else f" ({f['status'][:120]})"))
    try: ck.headline = headline(ck)
    except Exception as e: ck.headline = f"gpu_check: no headline ({type(e).__name__}: {e})"
    ck.write(); shutil.rmtree(ck.tmp, ignore_errors=True)
    print(f"{time.time() - ck.t0:.0f} s" + (f"; table written to {a.out}" if a.out else ''))
    print(ck.headline, flush=True)
    return 1 if any(r['status'].startswith('error') for r in ck.rows) else 0


if __name__ == '__main__': sys.exit(main())
