"Distillation as a user runs it: `teacher-lora-distill` killed while labelling and while training, then resumed; `teacher-lora-export`."
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from teacher_lora.coco import split_coco, load_coco
from teacher_lora.test_utils import shapes_domain
from teacher_lora.train import read_metrics

BIN = Path(sys.executable).parent
TINY = ['dino.model=tiny-pretrained', 'sam.model=tiny-pretrained', 'preprocess.dino_shortest=160', 'preprocess.dino_longest=213',
        'train.epochs=1', 'data.workers=0']
STUDENT = ['student.epochs=2', 'student.updates=0', 'student.batch_size=4', 'student.weights=random', 'data.workers=0', 'checkpoint.every=1', 'train.log_every=1']

def env(**kw): return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore', **kw}

def run(args, code=0, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env(**kw), timeout=900)
    assert r.returncode == code, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    return r

@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    "Tiny teachers tuned for an epoch on 8 target-domain images, their splits, and 12 unlabelled images."
    d = tmp_path_factory.mktemp('distill')
    src = shapes_domain(d/'gt', 16, 'target', seed=0)
    split_coco(src, {'train': .5, 'val': .25, 'test': .25}, seed=0, out_dir=d/'splits')
    unl = shapes_domain(d/'unl', 12, 'target', seed=1).parent/'images'
    run([BIN/'teacher-lora-train', '--data', d/'splits'/'train.json', '--val', d/'splits'/'val.json', '--images', d/'gt'/'images',
         '--output', d/'exp', '--set', *TINY])
    return d, unl

def distill(d, unl, out, *extra):
    return [BIN/'teacher-lora-distill', '--exp', d/'exp', '--images', unl, '--train', d/'splits'/'train.json', '--val', d/'splits'/'val.json',
            '--output', out, '--batch-size', '1', '--workers', '0', *extra, '--set', *STUDENT]

def kill_when(args, ready, log, **kw):
    "Start `args`, SIGKILL it as soon as `ready()` is true."
    with open(log, 'w') as f: p = subprocess.Popen([str(a) for a in args], stdout=f, stderr=subprocess.STDOUT, env=env(**kw))
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 600:
        if ready(): p.send_signal(signal.SIGKILL); p.wait(); return
        time.sleep(0.05)
    raise AssertionError(f"the run ended (rc {p.returncode}) before the kill point:\n{Path(log).read_text()[-2000:]}")

def labelled(out, n:int):
    "A kill condition: at least `n` images are in the labelling's part files."
    parts = out/'pseudo'/'labels.json.parts'
    return lambda: sum(len(p.read_text().splitlines()) for p in parts.glob('rank-*.jsonl')) >= n if parts.exists() else False

def trained(out, update:int):
    "A kill condition: the student has logged optimiser update `update`."
    return lambda: any(r['teacher'] == 'student' and r.get('update', 0) >= update and 'train' in r for r in read_metrics(out))

def test_kill_and_resume_matches_uninterrupted(exp, tmp_path):
    "Killed once while labelling and once while training the student, resumed each time: the same pseudo-labels and the same student."
    d, unl = exp
    ref = tmp_path/'ref'; run(distill(d, unl, ref))
    out = tmp_path/'killed'
    kill_when(distill(d, unl, out), labelled(out, 4), tmp_path/'1.log')
    assert not (out/'pseudo'/'labels.json').exists()  # killed while labelling
    kill_when(distill(d, unl, out, '--resume'), trained(out, 3), tmp_path/'2.log')
    assert (out/'pseudo'/'labels.json').exists() and not (out/'student').exists()  # labelled, killed while training
    r = run(distill(d, unl, out, '--resume'))
    assert 'student: validation box AP50' in r.stdout
    test_labels, ref_labels = (load_coco(o/'pseudo'/'labels.json') for o in (out, ref))
    assert test_labels == ref_labels
    a, b = (load_file(o/'student'/'model.safetensors') for o in (ref, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert any(k.endswith('running_mean') for k in a)  # the batch norms' statistics are trained and saved too

def test_export(exp, tmp_path):
    "The student exports to ONNX, checked against PyTorch; a folder without a student is refused by name; a teacher exports merged."
    d, unl = exp
    run(distill(d, unl, tmp_path/'st', '--pseudo-only'))
    assert json.loads((tmp_path/'st'/'student'/'student_card.json').read_text())['labels'] == 'pseudo'
    r = run([BIN/'teacher-lora-export', '--student', tmp_path/'st', '--out', tmp_path/'s.onnx', '--min-score', '0.05'])  # all it outputs: a 2-epoch student scores low
    m = re.search(r'onnxruntime = PyTorch on 4 images, (\d+) detections scoring 0.05 or more', r.stdout)
    assert m and int(m[1]) > 0, r.stdout
    run([BIN/'teacher-lora-export', '--student', tmp_path/'st', '--out', tmp_path/'s2.onnx', '--min-score', '2'], code=2)
    r = run([BIN/'teacher-lora-export', '--student', d/'exp', '--out', tmp_path/'x.onnx'], code=2)
    assert 'no student in it' in r.stderr and not (tmp_path/'x.onnx').exists()
    run([BIN/'teacher-lora-export', '--teacher', d/'exp'/'dino'/'teacher', '--merged', tmp_path/'dino_merged'])
    from teacher_lora.teachers import load_dino
    m, tok = load_dino(str(tmp_path/'dino_merged'))  # a plain Hugging Face folder: what a hub id or folder loads
    assert not any('lora' in n for n, _ in m.named_parameters()) and tok('a circle .')['input_ids']
    r = run([BIN/'teacher-lora-export', '--student', tmp_path/'st'], code=2)
    assert '--out model.onnx is required' in r.stderr

def test_distill_refuses_bad_input(exp, tmp_path):
    "A misspelt folder, a missing ground-truth folder record, and categories other than the teachers' are named before any work."
    d, unl = exp
    r = run(distill(d, tmp_path/'nope', tmp_path/'o1'), code=2)
    assert '--images' in r.stderr and not (tmp_path/'o1').exists()
    other = load_coco(d/'splits'/'train.json'); other['categories'][0]['name'] = 'blob'
    (tmp_path/'other.json').write_text(json.dumps(other))
    args = distill(d, unl, tmp_path/'o2'); args[args.index('--train') + 1] = tmp_path/'other.json'
    r = run(args, code=2)
    assert "do not hold the teachers' classes" in r.stderr, r.stderr

def test_torchrun_two_processes(exp, tmp_path):
    "Under torchrun with 2 processes: the images are labelled once (shared), the student trains with DDP, and the run ends (no hang)."
    import psutil
    d, unl = exp
    args = [str(a) for a in [BIN/'torchrun', '--nproc_per_node', '2', '--master_port', '29531', *distill(d, unl, tmp_path/'two')]]
    with open(tmp_path/'two.log', 'w') as f: p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env())
    try: p.wait(timeout=600)
    except subprocess.TimeoutExpired:
        for q in [*psutil.Process(p.pid).children(recursive=True), p]: q.kill()
        p.wait(); raise AssertionError("hung: no end after 600 s") from None
    log = (tmp_path/'two.log').read_text()
    assert p.returncode == 0 and 'Traceback' not in log, log[-3000:]
    assert len(load_coco(tmp_path/'two'/'pseudo'/'labels.json')['images']) == 12 and (tmp_path/'two'/'student'/'model.safetensors').exists()
    assert log.count('student: validation box AP50') == 1  # said once, by the main process
