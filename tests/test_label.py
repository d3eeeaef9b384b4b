"Evaluation and labelling as a user runs them: `teacher-lora-evaluate` and `teacher-lora-label` as subprocesses."
import contextlib, copy, io, json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from teacher_lora.coco import validate_coco
from teacher_lora.evaluate import STATS, score_results
from teacher_lora.test_utils import shapes_dataset, perturbed_results

BIN = Path(sys.executable).parent
SETS = ['dino.model=tiny', 'sam.model=tiny', 'preprocess.dino_shortest=96', 'preprocess.dino_longest=128', 'train.epochs=1',
        'train.lr=1e-2', 'data.workers=0', 'data.val_fraction=0.25', 'label.precision=0.5']

def run(*args, ok=True):
    r = subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'})
    assert 'Traceback' not in r.stderr, r.stderr[-3000:]
    if ok: assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r

def cocoeval_stats(gt_file, results, iou_type):
    "The 12 numbers of a plain pycocotools run, as its README writes it."
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(str(gt_file)); e = COCOeval(g, g.loadRes(copy.deepcopy(results)), iou_type)
        e.evaluate(); e.accumulate(); e.summarize()
    return e.stats

def test_results_file_scores_as_cocoeval(tmp_path):
    "Box and mask AP of a results file equal COCOeval's to 1e-6; the CLI prints the 12 standard numbers per type."
    gt = shapes_dataset(tmp_path/'shapes', 10, seed=5)
    res = perturbed_results(json.loads(gt.read_text()), seed=2)
    (tmp_path/'res.json').write_text(json.dumps(res))
    ours = score_results(tmp_path/'res.json', gt, verbose=False)
    for t in ('bbox', 'segm'):
        np.testing.assert_allclose([ours[t][k] for k in STATS], cocoeval_stats(gt, res, t), atol=1e-6)
    out = run('teacher-lora-evaluate', '--results', tmp_path/'res.json', '--data', gt).stdout
    assert out.count('Average Precision') == 12 and out.count('Average Recall') == 12
    assert f"{ours['segm']['AP']:0.3f}" in out
    (tmp_path/'bad.json').write_text(json.dumps(res[:3] + [dict(res[3], category_id=42)]))
    r = run('teacher-lora-evaluate', '--results', tmp_path/'bad.json', '--data', gt, ok=False)
    assert r.returncode == 2 and 'record 3' in r.stderr and 'category_id 42' in r.stderr

@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    "A one-epoch experiment of the tiny teachers, trained by the console script."
    d = tmp_path_factory.mktemp('exp')
    ann = shapes_dataset(d/'shapes', 12, seed=0, background='plain', scale=(.3, .55))
    r = run('teacher-lora-train', '--data', ann, '--images', d/'shapes'/'images', '--output', d/'exp', '--set', *SETS)
    assert 'labelling thresholds for precision 0.5' in r.stdout
    return d/'exp', d/'shapes'/'images'

def test_evaluate_experiment(exp):
    out, images = exp
    r = run('teacher-lora-evaluate', '--exp', out, '--data', out/'splits'/'val.json', '--images', images)
    assert '| Grounding DINO | box AP50 |' in r.stdout and '| DINO → SAM | mask AP |' in r.stdout
    ev = json.loads((out/'eval'/'evaluation.json').read_text())
    again = score_results(out/'eval'/'dino_boxes.json', out/'splits'/'val.json', verbose=False)
    assert abs(again['bbox']['AP'] - ev['stats']['tuned']['dino']['AP']) < 1e-9

def test_evaluate_refuses_broken_ground_truth(exp, tmp_path):
    "Ground truth the validator finds errors in is refused before any model work: exit 2, naming the file, its errors and the fix; nothing written."
    out, images = exp
    d = json.loads((out/'splits'/'val.json').read_text())
    d['annotations'][0]['category_id'] = 'circle'; d['images'][0]['width'] = float('nan')  # was: IndexError and KeyError in COCOeval (exit 3)
    (tmp_path/'val.json').write_text(json.dumps(d))
    r = run('teacher-lora-evaluate', '--exp', out, '--data', tmp_path/'val.json', '--images', images, '--out', tmp_path/'eval', ok=False)
    assert r.returncode == 2 and 'internal error' not in r.stderr, r.stderr[-2000:]
    assert f"{tmp_path/'val.json'}: " in r.stderr and "category_id 'circle'" in r.stderr and "width nan" in r.stderr
    assert f"teacher-lora-validate --data {tmp_path/'val.json'} --images {images} --fix fixed.json" in r.stderr
    assert not (tmp_path/'eval').exists()

def test_label_loads_validates_and_resumes(exp, tmp_path):
    "Labels load in pycocotools and pass validate_coco; a second run over a grown folder labels only the new images."
    out, images = exp
    folder = tmp_path/'unlabelled'; folder.mkdir()
    files = sorted(images.iterdir())
    for f in files[:8]: shutil.copy(f, folder/f.name)
    run('teacher-lora-label', '--exp', out, '--images', folder, '--out', tmp_path/'labels.json', '--threshold', '0.05', '--workers', '0')
    first = json.loads((tmp_path/'labels.json').read_text())
    with contextlib.redirect_stdout(io.StringIO()): c = COCO(str(tmp_path/'labels.json'))
    assert len(c.getImgIds()) == 8 and len(c.getAnnIds()) > 0
    assert validate_coco(tmp_path/'labels.json', folder).errors == []
    for f in files[8:]: shutil.copy(f, folder/f.name)
    r = run('teacher-lora-label', '--exp', out, '--images', folder, '--out', tmp_path/'labels.json', '--threshold', '0.05', '--workers', '0')
    assert 'labelling 4 of 12 images' in r.stderr
    second = json.loads((tmp_path/'labels.json').read_text())
    assert len(second['images']) == 12 and validate_coco(tmp_path/'labels.json', folder).errors == []
    def by_file(d):
        names = {i['id']: i['file_name'] for i in d['images']}
        out = {}
        for a in d['annotations']: out.setdefault(names[a['image_id']], []).append({k: v for k, v in a.items() if k not in ('id', 'image_id')})
        return out
    old = by_file(first); new = by_file(second)
    assert all(new[f] == a for f, a in old.items())  # the first eight images' labels were kept, not redone

def test_label_under_torchrun_matches_one_process(exp, tmp_path):
    "Two processes share the images (each its own part file) and write the same COCO file as one process."
    out, images = exp
    args = ['--exp', out, '--images', images, '--threshold', '0.05', '--workers', '0', '--device', 'cpu']
    run('teacher-lora-label', *args, '--out', tmp_path/'one.json')
    r = subprocess.run([str(BIN/'torchrun'), '--nproc_per_node', '2', str(BIN/'teacher-lora-label'), *map(str, args), '--out', str(tmp_path/'two.json')],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert r.stderr.count('labelling 12 of 12 images') >= 1
    one, two = (json.loads((tmp_path/f).read_text()) for f in ('one.json', 'two.json'))
    assert two['images'] == one['images'] and len(two['annotations']) == len(one['annotations']) > 0
    for a, b in zip(one['annotations'], two['annotations']):
        assert a['category_id'] == b['category_id'] and abs(a['score'] - b['score']) < 1e-4 and a['bbox'] == pytest.approx(b['bbox'], abs=1)
    assert not (tmp_path/'two.json.parts').exists()

def self_scores(label_file, tool):
    "The label file's annotations scored as results against the file itself, per IoU type: box and mask AP (pycocotools or faster-coco-eval)."
    d = json.loads(Path(label_file).read_text())
    res = [{k: a[k] for k in ('image_id', 'category_id', 'bbox', 'segmentation', 'score')} for a in d['annotations']]
    if tool == 'pycocotools': Coco, Eval = COCO, COCOeval
    else: from faster_coco_eval import COCO as Coco, COCOeval_faster as Eval
    out = {}
    for t in ('bbox', 'segm'):
        with contextlib.redirect_stdout(io.StringIO()):
            g = Coco(str(label_file)); e = Eval(g, g.loadRes(copy.deepcopy(res)), t)
            e.evaluate(); e.accumulate(); e.summarize()
        out[t] = float(e.stats[0])
    return out

def test_label_round_trip(exp, tmp_path):
    "A label file at a low threshold is segm and bbox ground truth for pycocotools and faster-coco-eval, validates clean, and scores itself at AP 1."
    out, images = exp
    folder = tmp_path/'unlabelled'; folder.mkdir()
    for f in sorted(images.iterdir())[:4]: shutil.copy(f, folder/f.name)
    run('teacher-lora-label', '--exp', out, '--images', folder, '--out', tmp_path/'labels.json', '--threshold', '0.1', '--workers', '0')
    d = json.loads((tmp_path/'labels.json').read_text())
    sizes = {i['id']: (i['width'], i['height']) for i in d['images']}
    assert d['annotations'] and all('segmentation' in a for a in d['annotations'])  # a masked file: masks throughout
    for a in d['annotations']:
        x, y, w, h = a['bbox']; W, H = sizes[a['image_id']]
        assert x >= 0 and y >= 0 and x + w <= W + 1e-6 and y + h <= H + 1e-6 and a['area'] <= w * h + 1e-6
    rep = validate_coco(tmp_path/'labels.json', folder)
    assert rep.errors == [] and rep.warnings == [], rep.findings[:5]
    from teacher_lora.data import CocoDataset
    ds = CocoDataset(tmp_path/'labels.json', folder, masks=True)  # the package's own loader, masks included
    assert len(ds) == 4 and all(len(ds[i]['target']['masks']) == len(ds[i]['target']['boxes']) for i in range(4))
    for tool in ('pycocotools', 'faster-coco-eval'):
        assert self_scores(tmp_path/'labels.json', tool) == {'bbox': 1., 'segm': 1.}, tool

@pytest.fixture(scope='module')
def box_teacher(tmp_path_factory):
    "The shipped tiny pretrained Grounding DINO with fresh adapters as a teacher folder (no SAM: labels are boxes), and 8 shapes images of three sizes."
    from teacher_lora.teachers import DINO_LORA_TARGETS, apply_lora, load_dino, save_teacher, teacher_card
    d = tmp_path_factory.mktemp('box')
    ann = shapes_dataset(d/'shapes', 8, seed=0, background='plain', scale=(.3, .55))
    names = ['circle', 'square', 'triangle']
    card = teacher_card('grounding_dino', dict(id='tiny-pretrained'), names, [1, 2, 3], dict(r=4, alpha=8, dropout=0.),
                        use=dict(shortest=96, longest=128, box_threshold=.3))
    save_teacher(apply_lora(load_dino('tiny-pretrained')[0], DINO_LORA_TARGETS, r=4, alpha=8), d/'teacher', card)
    return d/'teacher', ann, d/'shapes'/'images'

def test_labels_do_not_depend_on_batching(box_teacher, tmp_path):
    "Labelling at batch 1 and 4 gives the same objects (images of three sizes: a mixed batch pads them), and the calibrated thresholds keep what calibration counted."
    from teacher_lora.predict import calibrate, label_images
    from teacher_lora.evaluate import load_teachers
    teacher, ann, images = box_teacher
    ts = load_teachers(teacher, 'cpu')
    def label(bs, th=None):
        return label_images(ts, images, tmp_path/f'labels-{bs}-{th}.json', batch_size=bs, workers=0, dev='cpu', progress=False,
                            thresholds=th and {n: th for n in ts['dino'].names})
    def same(a, b):
        key = lambda x: (x['image_id'], x['category_id'], -x['score'])
        a, b = sorted(a['annotations'], key=key), sorted(b['annotations'], key=key)
        return len(a) == len(b) and all(x['image_id'] == y['image_id'] and x['category_id'] == y['category_id'] and abs(x['score'] - y['score']) < 1e-5
                                        and x['bbox'] == pytest.approx(y['bbox'], abs=.01) for x, y in zip(a, b))
    one, four = label(1, .05), label(4, .05)
    assert len(one['annotations']) > 20 and same(one, four)
    sizes = {i['id']: (i['width'], i['height']) for i in one['images']}
    for a in one['annotations']:  # boxes without masks: clipped to the image, area w·h
        x, y, w, h = a['bbox']; W, H = sizes[a['image_id']]
        assert x >= 0 and y >= 0 and x + w <= W and y + h <= H and a['area'] == pytest.approx(w * h) and 'segmentation' not in a
    th = calibrate(ts, ann, images, precision=.3, batch_size=2, dev='cpu')
    assert any(t['score'] is not None for t in th.values()), th
    one, four = label(1), label(4)
    assert one['annotations'] and same(one, four)


def test_label_reads_its_earlier_output_once(box_teacher, tmp_path, monkeypatch):
    "Issue 15 #33: what an earlier run labelled is read once per run (before, once per image: quadratic in the folder's size)."
    import teacher_lora.predict as P
    from teacher_lora.evaluate import load_teachers
    teacher, ann, images = box_teacher
    calls, done = [], P._done
    monkeypatch.setattr(P, '_done', lambda *a: calls.append(1) or done(*a))
    out = P.label_images(load_teachers(teacher, 'cpu'), images, tmp_path/'labels.json', batch_size=2, workers=0, dev='cpu', progress=False)
    assert len(out['images']) == 8 and len(calls) <= 2, calls  # once to skip what is done, once to gather the parts at the end
