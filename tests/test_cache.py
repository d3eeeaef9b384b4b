"The feature cache as a user meets it: `train.cache: auto` within a memory budget, on disk beyond it, a disk that fills."
import errno, json, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from teacher_lora.test_utils import shapes_dataset
from teacher_lora.cache import FeatureCache, TrainError
from teacher_lora.train import save_checkpoint, checkpoints, load_checkpoint, read_metrics

BIN = Path(sys.executable).parent
SETS = ['dino.model=tiny', 'sam.model=tiny', 'preprocess.dino_shortest=96', 'preprocess.dino_longest=128', 'train.epochs=2',
        'train.lr=3e-3', 'data.workers=0', 'data.val_fraction=0.25', 'train.log_every=1', 'sam.max_prompts=1']
# a parent process that reports its one child's peak resident memory (RUSAGE_CHILDREN of a fresh process: that child only)
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(r.returncode)")

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp('shapes')
    return shapes_dataset(d, 16, seed=0, background='plain', scale=(.3, .55)), d/'images'

def env(): import os; return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}

def train_run(ann, images, out, *sets):
    "`teacher-lora-train` in a subprocess: (stdout, stderr, the child's peak RSS in MiB)."
    args = [str(BIN/'teacher-lora-train'), '--data', str(ann), '--images', str(images), '--output', str(out), '--set', *SETS, *sets]
    r = subprocess.run([sys.executable, '-c', PEAK, *args], capture_output=True, text=True, env=env(), timeout=900)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    return r.stdout, r.stderr, int(r.stderr.split('peak_rss_kib=')[-1].split()[0]) / 1024

def adapters(out, n): return load_file(out/n/'teacher'/'adapter_model.safetensors')

def test_auto_cache_beyond_budget_goes_to_disk(shapes, tmp_path):
    ann, images = shapes
    mem_out, mem_err, mem_rss = train_run(ann, images, tmp_path/'mem')  # default budget: 25% of the available RAM
    disk_out, disk_err, disk_rss = train_run(ann, images, tmp_path/'disk', 'train.cache_memory=1KB')
    n_images = len(json.loads(Path(ann).read_text())['images'])
    for n in ('dino', 'sam'):
        assert f"{n} feature cache: memory (estimated" in mem_out and f"<= memory budget" in mem_out
        assert f"{n} feature cache: disk (estimated" in disk_out and '> memory budget 1000 B' in disk_out
        files = list((tmp_path/'disk'/'cache'/n).glob('*.safetensors'))
        assert 0 < len(files) <= n_images and not list((tmp_path/'disk'/'cache'/n).glob('.*.tmp'))
        assert not (tmp_path/'mem'/'cache').exists()
        # the run's own account of its cache: nothing held in memory on disk, something in memory otherwise
        line = lambda out: next(l for l in out.splitlines() if l.startswith(f"{n} teacher"))
        assert 'FeatureCache(disk' in line(disk_out) and '0 B in memory' in line(disk_out), line(disk_out)
        assert 'FeatureCache(memory' in line(mem_out) and '0 B in memory' not in line(mem_out)
        a, b = adapters(tmp_path/'mem', n), adapters(tmp_path/'disk', n)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), n  # same features, same training
    print(f'peak RSS: memory-cache run {mem_rss:.0f} MiB, disk-cache run {disk_rss:.0f} MiB')
    assert disk_rss <= mem_rss * 1.05 + 50, (disk_rss, mem_rss)  # not more memory than the in-memory run (at these sizes: noise)

def test_resume_with_prompt_cap_is_exact(shapes, tmp_path):
    "`sam.max_prompts=1` draws one prompt per image and epoch: a run killed in epoch 2 and resumed ends as the uninterrupted one."
    ann, images = shapes
    def args(out, *extra): return [str(BIN/'teacher-lora-train'), '--data', str(ann), '--images', str(images), '--only', 'sam',
                                   '--output', str(out), *extra, '--set', *SETS, 'checkpoint.every=1', 'checkpoint.keep_last=1']
    def go(a):
        r = subprocess.run(a, capture_output=True, text=True, env=env(), timeout=900); assert r.returncode == 0, r.stderr[-3000:]
    go(args(tmp_path/'ref'))
    out = tmp_path/'killed'
    p = subprocess.Popen(args(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env()); t0 = time.time()
    while p.poll() is None and time.time() - t0 < 600:  # 3 updates an epoch: kill after the first of epoch 2
        if any(r.get('update', 0) >= 4 and 'train' in r for r in read_metrics(out)): p.send_signal(signal.SIGKILL); break
        time.sleep(0.05)
    assert p.wait() == -signal.SIGKILL, "the run ended before the kill point"
    go(args(out, '--resume'))
    a, b = adapters(tmp_path/'ref', 'sam'), adapters(out, 'sam')
    assert all(torch.equal(a[k], b[k]) for k in a)

def _full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')

def test_disk_full_while_caching(tmp_path, monkeypatch):
    import safetensors.torch
    fc = FeatureCache('disk', tmp_path/'cache'/'sam', key='k'); fc.plan(10)
    fc.lookup(['a'], lambda idx: [dict(x=torch.zeros(4)) for _ in idx])
    monkeypatch.setattr(safetensors.torch, 'save_file', _full)
    with pytest.raises(TrainError) as e: fc.lookup(['b'], lambda idx: [dict(x=torch.zeros(4)) for _ in idx])
    assert str(tmp_path/'cache'/'sam') in str(e.value) and 'train.cache=off' in str(e.value) and '--output' in str(e.value)
    assert [p.name for p in (tmp_path/'cache'/'sam').iterdir()] == [fc._path('a').name]  # no partial file; the good entry stays

def test_disk_full_while_checkpointing(tmp_path, monkeypatch):
    import safetensors.torch
    from accelerate import Accelerator
    acc, net = Accelerator(cpu=True), torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(net.parameters()); sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.)
    state = dict(epoch=1, step=0, update=1, best=None, bad=0, history=[], done=False)
    save_checkpoint(tmp_path, net, opt, sched, acc, state)
    monkeypatch.setattr(safetensors.torch, 'save_file', _full)
    with pytest.raises(TrainError, match='checkpoint update-0000002'): save_checkpoint(tmp_path, net, opt, sched, acc, dict(state, update=2))
    assert [p.name for p in (tmp_path/'checkpoints').iterdir()] == ['update-0000001']  # the temp folder is gone
    monkeypatch.undo()
    assert load_checkpoint(checkpoints(tmp_path)[-1], net, opt, sched, acc)['update'] == 1  # and the earlier one is intact

def test_disk_full_exit_2(shapes, tmp_path):
    "The console script: a disk that fills while the cache is written ends with exit 2 and a message, no traceback."
    ann, images = shapes
    kw = dict(data=str(ann), images=str(images), output=str(tmp_path/'exp'), only='sam', set=SETS + ['train.cache=disk'])
    code = ("import errno, sys, safetensors.torch as s\n"
            "def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "s.save_file = full  # what a full disk does to the cache's writes\n"
            "sys.argv = ['teacher-lora-train']  # exit codes as from the console script\n"
            f"from teacher_lora.cli import train_cli\ntrain_cli(**{kw!r})")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env(), timeout=600)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'not enough space on the disk holding' in r.stderr and 'train.cache=off' in r.stderr and 'Traceback' not in r.stderr
