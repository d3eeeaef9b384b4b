"""The console scripts as a user runs them: real subprocesses on the broken-COCO corpus."""
import hashlib, json, os, subprocess, sys
from pathlib import Path
import pytest
from teacher_lora.test_utils import broken_coco_corpus
from teacher_lora.coco import validate_coco
from teacher_lora.datasets import fruits_nuts, fruits_nuts_help

BIN = Path(sys.executable).parent


def run(*args, cwd=None):
    "Run a console script; return (exit code, stdout, stderr)."
    r = subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, cwd=cwd, timeout=120)
    return r.returncode, r.stdout, r.stderr


def run_here(*args, cwd=None):
    "Run a console script's verb in this process, as the script does (its parser, its exit code, what it prints); return (exit code, stdout, stderr)."
    import contextlib, io
    from fuzz import _call
    out, err, old, argv = io.StringIO(), io.StringIO(), os.getcwd(), sys.argv
    try:
        if cwd: os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = _call(args[0].removeprefix('teacher-lora-'), args[1:])
    finally: os.chdir(old); sys.argv = argv
    return rc, out.getvalue(), err.getvalue()


def tree_hashes(folder):
    "sha256 of every file under `folder`."
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).rglob('*') if p.is_file()}


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return broken_coco_corpus(tmp_path_factory.mktemp('corpus'))


def test_corpus_is_large(corpus):
    assert len(corpus) >= 40


def test_each_case_through_the_cli(corpus, tmp_path):
    "Every malformed input yields its finding and a meaningful exit code; no traceback; inputs byte-identical (the first cases as subprocesses, the rest in this process: the same code, without a second for each start)."
    for k, (name, code, ann, images) in enumerate(corpus):
        run = globals()['run'] if k < 3 else run_here
        before = tree_hashes(ann.parent)
        rc, out, err = run('teacher-lora-validate', '--data', ann, '--images', images)
        assert code in out, f"{name}: expected finding {code}\n{out}{err}"
        assert 'Traceback' not in out + err, f"{name}:\n{err}"
        usable = validate_coco(ann, image_root=images).usable
        expected_rc = 2 if not usable else 1 if validate_coco(ann, image_root=images).errors else 0
        assert rc == expected_rc, f"{name}: exit code {rc}, expected {expected_rc}\n{out}{err}"
        if usable:  # repairing writes a new file and leaves the case untouched
            rc, out, err = run('teacher-lora-validate', '--data', ann, '--fix', tmp_path/f'{name}.json')
            assert 'Traceback' not in out + err and rc in (0, 1), f"{name} --fix:\n{out}{err}"
            assert (tmp_path/f'{name}.json').exists()
        assert tree_hashes(ann.parent) == before, f"{name}: input files changed"


def test_fix_refuses_to_overwrite_input(corpus):
    name, code, ann, images = next(c for c in corpus if c[0] == 'bbox-xyxy')
    before = ann.read_bytes()
    rc, out, err = run('teacher-lora-validate', '--data', ann, '--fix', ann)
    assert rc == 2 and 'input file' in err and 'Traceback' not in err
    assert ann.read_bytes() == before


def test_bad_split_spec_is_a_usage_error(corpus):
    rc, out, err = run('teacher-lora-validate', '--data', corpus[-1][2], '--split', 'train=0.8')
    assert rc == 2 and 'name:ratio' in err and 'Traceback' not in err


def test_fruits_nuts_validate_and_split(tmp_path):
    if not (fruits := fruits_nuts(download=False)): pytest.skip(fruits_nuts_help())
    rc, out, err = run('teacher-lora-validate', '--data', fruits.annotations, '--images', fruits.images,
                       '--split', 'train:0.7,val:0.15,test:0.15', '--stratify', '--out', tmp_path)
    assert rc == 0, out + err
    assert '0 error(s)' in out
    names = {'date', 'fig', 'hazelnut'}
    for split in ('train', 'val', 'test'):
        d = json.loads((tmp_path/f'{split}.json').read_text())
        cats = {c['id']: c['name'] for c in d['categories']}
        assert {cats[a['category_id']] for a in d['annotations']} == names, split
    rc, out, err = run('teacher-lora-validate', '--data', fruits.annotations, '--split', 'train:0.5,val:0.5', '--out', tmp_path)
    assert rc == 2 and '--overwrite' in err  # never replaces existing files silently


def test_fruits_nuts_summary(tmp_path):
    "The summary comes before the findings: images, annotations, and each class with its count."
    if not (fruits := fruits_nuts(download=False)): pytest.skip(fruits_nuts_help())
    rc, out, err = run('teacher-lora-validate', '--data', fruits.annotations, '--images', fruits.images)
    assert rc == 0, out + err
    lines = [l.split() for l in out.splitlines()]
    for row in (['images', '18'], ['annotations', '165'], ['date', '71'], ['fig', '41'], ['hazelnut', '53']): assert row in lines, out
    assert out.index('hazelnut') < out.index('0 error(s), 0 warning(s)')
    rc, out, err = run('teacher-lora-validate', '--data', fruits.annotations, '--quiet')
    assert rc == 0 and out.splitlines() == [f"{fruits.annotations}: 0 error(s), 0 warning(s)"], out


def test_fruits_nuts_roboflow_category_trains_three_classes(tmp_path):
    "Roboflow's export adds the dataset's name as category 0, unannotated: the prompt keeps the three real classes."
    if not (fruits := fruits_nuts(download=False)): pytest.skip(fruits_nuts_help())
    d = json.loads(fruits.annotations.read_text())
    d['categories'].insert(0, dict(id=0, name='fruits-nuts', supercategory='none'))
    (tmp_path/'rf.json').write_text(json.dumps(d))
    rc, out, err = run('teacher-lora-validate', '--data', tmp_path/'rf.json', '--quiet')
    assert rc == 0 and 'category-unused' in out, out + err
    rc, out, err = run('teacher-lora-train', '--data', tmp_path/'rf.json', '--images', fruits.images, '--output', tmp_path/'exp',
                       '--dino', 'tiny', '--only', 'dino', '--set', 'train.epochs=1', 'data.workers=0', 'preprocess.dino_shortest=96',
                       'preprocess.dino_longest=128')
    assert rc == 0, out + err
    card = json.loads((tmp_path/'exp'/'dino'/'teacher'/'teacher_card.json').read_text())
    assert [p['prompt'] for p in card['prompts']] == ['date . fig . hazelnut .'] and card['cat_ids'] == [1, 2, 3], card['prompts']
    assert 'left out of the prompt and the teachers: fruits-nuts' in out

def test_demo(tmp_path):
    rc, out, err = run('teacher-lora-validate', '--demo', cwd=tmp_path)
    assert rc == 0, out + err
    assert 'bbox-mismatch' in out and 'repaired copy' in out
    assert {p.name for p in (tmp_path/'teacher_lora_demo').glob('*.json')} == {'annotations.json', 'fixed.json', 'train.json', 'val.json'}


def test_fix_reads_missing_sizes_from_the_images(tmp_path):
    "Item 34: fruits_nuts without width/height: --fix --images reads them from the files; without --images the annotations are kept."
    if not (fruits := fruits_nuts(download=False)): pytest.skip(fruits_nuts_help())
    d = json.loads(fruits.annotations.read_text())
    for im in d['images']: im.pop('width'), im.pop('height')
    (tmp_path/'nosize.json').write_text(json.dumps(d))
    rc, out, err = run('teacher-lora-validate', '--data', tmp_path/'nosize.json', '--fix', tmp_path/'kept.json', '--quiet')
    assert rc == 1 and 'annotations kept unrepaired' in out, out + err
    assert len(json.loads((tmp_path/'kept.json').read_text())['annotations']) == 165
    rc, out, err = run('teacher-lora-validate', '--data', tmp_path/'nosize.json', '--images', fruits.images, '--fix', tmp_path/'fixed.json', '--quiet')
    assert rc == 0 and 'size from the image file' in out and 'after repair: ' in out, out + err
    fixed = json.loads((tmp_path/'fixed.json').read_text())
    assert len(fixed['annotations']) == 165 and validate_coco(fixed).ok


def test_split_keeps_each_photo_in_one_split(tmp_path):
    "Item 37: a repeated file_name and a copy under another name stay in one split, with and without --stratify."
    if not (fruits := fruits_nuts(download=False)): pytest.skip(fruits_nuts_help())
    import shutil
    images = tmp_path/'images'; shutil.copytree(fruits.images, images)
    d = json.loads(fruits.annotations.read_text()); a, b = d['images'][:2]
    shutil.copy(images/b['file_name'], images/('copy_' + b['file_name']))
    d['images'] += [dict(a, id=1001), dict(b, id=1002, file_name='copy_' + b['file_name'])]
    (tmp_path/'dup.json').write_text(json.dumps(d))
    for name, flags in (('stratified', ['--stratify']), ('random', [])):
        rc, out, err = run('teacher-lora-validate', '--data', tmp_path/'dup.json', '--images', images, '--split', 'train:0.5,val:0.5',
                           *flags, '--out', tmp_path/name, '--quiet')
        assert rc == 0 and 'duplicate-file' in out, out + err
        where = {i['id']: s for s in ('train', 'val') for i in json.loads((tmp_path/name/f'{s}.json').read_text())['images']}
        assert (where[a['id']], where[b['id']]) == (where[1001], where[1002]), where
