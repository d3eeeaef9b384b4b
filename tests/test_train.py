"Training as a user runs it: `teacher-lora-train` as a subprocess, killed and resumed, and under torchrun."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from teacher_lora.test_utils import shapes_dataset
from teacher_lora.train import read_metrics

BIN = Path(sys.executable).parent
SETS = ['dino.model=tiny', 'sam.model=tiny', 'preprocess.dino_shortest=96', 'preprocess.dino_longest=128', 'train.epochs=2',
        'train.lr=3e-3', 'data.workers=0', 'data.val_fraction=0.25', 'train.log_every=1', 'checkpoint.every=1', 'checkpoint.keep_last=1']

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp('shapes')
    return shapes_dataset(d, 16, seed=0, background='plain', scale=(.3, .55)), d/'images'

def cmd(ann, images, out, *extra, sets=SETS):
    return [str(BIN/'teacher-lora-train'), '--data', str(ann), '--images', str(images), '--output', str(out), *extra, '--set', *sets]

def env(**kw): return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore', **kw}

def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, env=env(**kw), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    return r

def final_adapters(out):
    "The fp32 adapters of each teacher's last checkpoint."
    return {n: load_file(sorted((out/n/'checkpoints').glob('update-*'))[-1]/'adapter.safetensors') for n in ('dino', 'sam')}

def kill_when(args, ready, log, **kw):
    "Start `args`, SIGKILL it as soon as `ready(stderr so far)` is true."
    with open(log, 'w') as f: p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, env=env(**kw))
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300:
        if ready(Path(log).read_text()): p.send_signal(signal.SIGKILL); p.wait(); return
        time.sleep(0.05)
    raise AssertionError(f"the run ended (rc {p.returncode}) before the kill point:\n{Path(log).read_text()[-2000:]}")

def trained(out, teacher, update):
    "A kill condition: `teacher` has logged optimiser update `update`."
    return lambda err: any(r['teacher'] == teacher and r.get('update', 0) >= update and 'train' in r for r in read_metrics(out))

SCOPES = {'decoder': ['data.augment=true'],  # augmented images: no feature cache
          'encoder': ['dino.lora_scope=encoder:1', 'sam.lora_scope=encoder:1', 'train.cache=disk']}  # the partial cache, kept on disk across the kills

@pytest.mark.parametrize('scope', SCOPES)
def test_kill_and_resume_matches_uninterrupted(shapes, tmp_path, scope):
    "With two loader workers (the default `data.workers`): what each image looks like must not depend on the worker; with LoRA in the encoders, what the partial cache holds must not depend on the run."
    ann, images = shapes
    sets = [s for s in SETS if not s.startswith('data.workers=')] + ['data.workers=2', *SCOPES[scope]]
    go = lambda out, *extra: cmd(ann, images, out, *extra, sets=sets)
    ref = tmp_path/'ref'; run(go(ref))
    out = tmp_path/'killed'
    # 1. killed while the first checkpoint is being written: the half-written one is hidden, none is visible
    kill_when(go(out), lambda err: 'fault point checkpoint-write' in err, tmp_path/'1.log', TEACHER_LORA_FAULT='checkpoint-write')
    assert list((out/'dino'/'checkpoints').glob('.tmp-update-*')) and not list((out/'dino'/'checkpoints').glob('update-*'))
    # 2. resumed, then killed in the middle of Grounding DINO's second epoch
    kill_when(go(out, '--resume'), trained(out, 'dino', 5), tmp_path/'2.log')
    # 3. resumed, then killed in the middle of SAM's first epoch
    kill_when(go(out, '--resume'), trained(out, 'sam', 2), tmp_path/'3.log')
    # 4. resumed to the end
    r = run(go(out, '--resume'))
    a, b = final_adapters(ref), final_adapters(out)
    for n in ('dino', 'sam'):
        assert a[n].keys() == b[n].keys() and len(a[n]) > 0
        for k in a[n]: assert torch.equal(a[n][k], b[n][k]), (n, k)
        ta, tb = (load_file(o/n/'teacher'/'adapter_model.safetensors') for o in (ref, out))
        for k in ta: assert torch.equal(ta[k], tb[k])
    # every checkpoint left is complete, and the log holds each update once
    for ck in out.glob('*/checkpoints/*'):
        assert not ck.name.startswith('.tmp') and {p.name for p in ck.iterdir()} == {'adapter.safetensors', 'state.pt', 'rng-0.pt'}
    ups = [(x['teacher'], x['update']) for x in read_metrics(out) if 'train' in x]
    assert len(ups) == len(set(ups)) == len([1 for x in read_metrics(ref) if 'train' in x])
    assert 'mIoU' in r.stdout and 'AP50' in r.stdout
    if scope == 'encoder':  # the resumed run read the entries the killed ones wrote
        assert all(list((out/'cache'/n).glob('*.safetensors')) for n in ('dino', 'sam'))
        assert json.loads((out/'sam'/'teacher'/'teacher_card.json').read_text())['lora']['scope'] == 'encoder:1'

def run_or_hang(args, timeout:int, log):
    "Run `args`; past `timeout` seconds kill it and every process under it (torchrun's workers have sessions of their own) and fail."
    import psutil
    with open(log, 'w') as f: p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, env=env())
    try: p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for q in [*psutil.Process(p.pid).children(recursive=True), p]: q.kill()
        p.wait(); raise AssertionError(f"hung: no end after {timeout} s") from None
    err = Path(log).read_text()
    assert p.returncode == 0 and 'Traceback' not in err, err[-3000:]

def no_objects_on_rank1(ann, folder, world=2, batch_size=2):
    "Train/val files from `ann` (4 val images) whose first training step gives process 1 only images without objects."
    from teacher_lora.train import epoch_batches
    d = json.loads(Path(ann).read_text())
    part = lambda imgs, drop=(): dict(d, images=imgs, annotations=[a for a in d['annotations'] if a['image_id'] in {i['id'] for i in imgs} - set(drop)])
    va, tr = d['images'][:4], d['images'][4:]
    empty = {tr[i]['id'] for i in epoch_batches(len(tr), batch_size, 0, 0, rank=1, world=world)[0]}  # train.seed 0, epoch 0
    for n, x in (('train', part(tr, empty)), ('val', part(va))): (folder/f'{n}.json').write_text(json.dumps(x))
    return folder/'train.json', folder/'val.json'

def test_torchrun_two_processes_match_one(shapes, tmp_path):
    "Two processes under torchrun train as one with the same global batch, also when one process's batch has no objects (it must still join DDP's all-reduce)."
    ann, images = shapes
    ann, val = no_objects_on_rank1(ann, tmp_path)
    one = tmp_path/'one'; run(cmd(ann, images, one, '--val', str(val), sets=SETS + ['train.batch_size=4']))
    two = tmp_path/'two'
    run_or_hang([str(BIN/'torchrun'), '--nproc_per_node', '2', '--master_port', '29517', *cmd(ann, images, two, '--val', str(val), sets=SETS + ['train.batch_size=2'])], 300, tmp_path/'two.log')
    for n, k in (('sam', 'miou'), ('dino', 'ap50')):
        m1, m2 = (json.loads((o/n/'teacher'/'teacher_card.json').read_text())['history'][-1] for o in (one, two))
        assert m1['update'] == m2['update'] and m1['n'] == m2['n']
        assert abs(m1[k] - m2[k]) <= 0.02, (n, m1, m2)
    assert (two/'cache'/'sam').is_dir()  # several processes share a disk cache
    # both processes wrote their random states into every checkpoint
    assert all({'rng-0.pt', 'rng-1.pt'} <= {p.name for p in ck.iterdir()} for ck in two.glob('*/checkpoints/update-*'))

def test_demo_refuses_and_reports(shapes, tmp_path):
    ann, images = shapes
    out = tmp_path/'exp'; run(cmd(ann, images, out, '--only', 'sam'))
    r = subprocess.run(cmd(ann, images, out, '--only', 'sam'), capture_output=True, text=True, env=env())
    assert r.returncode == 2 and 'already holds an experiment' in r.stderr and 'Traceback' not in r.stderr
    r = subprocess.run(cmd(ann, images, tmp_path/'x', sets=['train.lr=fast']), capture_output=True, text=True, env=env())
    assert r.returncode == 2 and 'train.lr: expected float' in r.stderr

def test_torchrun_sam_encoder_scope(shapes, tmp_path):
    "SAM with an adapted encoder block under torchrun: DDP wraps every adapter, and a process whose batch has no objects still reaches the encoder's (else DDP fails or hangs). That two processes train as one is checked above, for the decoder scope."
    ann, images = shapes
    ann, val = no_objects_on_rank1(ann, tmp_path)
    two = tmp_path/'two'
    run_or_hang([str(BIN/'torchrun'), '--nproc_per_node', '2', '--master_port', '29518', *cmd(ann, images, two, '--val', str(val), '--only', 'sam',
                 sets=SETS + ['sam.lora_scope=encoder:1', 'train.epochs=1', 'train.batch_size=2'])], 300, tmp_path/'two.log')
    a = load_file(two/'sam'/'teacher'/'adapter_model.safetensors')
    assert sum('image_encoder.blocks.1.' in k for k in a) == 8  # qkv, proj, lin1, lin2: A and B
    assert all(a[k].abs().max() > 0 for k in a if 'image_encoder.blocks.1.' in k and 'lora_B' in k)  # trained
