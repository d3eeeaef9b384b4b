"""Image folders as real users have them: symlinks (DVC, git-annex, the Hugging Face cache, `ln -s`) validate, train and label;
file names that leave the folder stay refused. The console scripts run as real subprocesses."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from teacher_lora.test_utils import shapes_dataset

BIN = Path(sys.executable).parent
SETS = ['preprocess.dino_shortest=96', 'preprocess.dino_longest=128', 'train.epochs=1',
        'data.workers=0', 'data.val_fraction=0.25', 'checkpoint.every=1', 'checkpoint.keep_last=1']


def run(*args):
    "Run a console script; return (exit code, stdout + stderr)."
    r = subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'})
    return r.returncode, r.stdout + r.stderr


def link(target:Path, at:Path):
    "A relative symlink `at` -> `target`, as git-annex and DVC make them."
    at.symlink_to(os.path.relpath(target, at.parent))


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    "8 real images with boxes and masks (both teachers): `annotations.json` and `images/`."
    d = tmp_path_factory.mktemp('shapes')
    return shapes_dataset(d, 8, seed=0, background='plain', scale=(.3, .55))


def files_into_store(shapes, tmp):
    "Every image a symlink into a sibling folder, like `git annex` or `dvc checkout` leave them."
    store, images = tmp/'store', tmp/'images'
    shutil.copytree(shapes.parent/'images', store); images.mkdir()
    for p in store.iterdir(): link(p, images/p.name)
    shutil.copy(shapes, tmp/'annotations.json')
    return tmp/'annotations.json', images


def sub_folder(shapes, tmp):
    "Half the images in a real folder, the other half behind a symlinked sub-folder (file_names 'more/...')."
    images, elsewhere = tmp/'images', tmp/'elsewhere'
    images.mkdir(); elsewhere.mkdir(); link(elsewhere, images/'more')
    d = json.loads(shapes.read_text())
    for i, im in enumerate(d['images']):
        if i % 2: shutil.copy(shapes.parent/'images'/im['file_name'], elsewhere/im['file_name']); im['file_name'] = 'more/' + im['file_name']
        else: shutil.copy(shapes.parent/'images'/im['file_name'], images/im['file_name'])
    (tmp/'annotations.json').write_text(json.dumps(d))
    return tmp/'annotations.json', images


def root_link(shapes, tmp):
    "The image folder itself a symlink (a dataset folder linked into a project, or a Hugging Face cache snapshot)."
    shutil.copytree(shapes.parent/'images', tmp/'real_images')
    (tmp/'images').symlink_to(tmp/'real_images')
    shutil.copy(shapes, tmp/'annotations.json')
    return tmp/'annotations.json', tmp/'images'


@pytest.mark.parametrize('layout', [files_into_store, sub_folder, root_link])
def test_symlinked_images_validate_and_train(shapes, tmp_path, layout):
    (tmp_path/'data').mkdir()
    ann, images = layout(shapes, tmp_path/'data')
    assert any(p.is_symlink() for p in [images, *images.iterdir()])
    rc, out = run('teacher-lora-validate', '--data', ann, '--images', images)
    assert rc == 0 and '0 error(s)' in out and 'outside the image folder' not in out, out
    rc, out = run('teacher-lora-train', '--data', ann, '--images', images, '--output', tmp_path/'exp',
                  '--dino', 'tiny', '--sam', 'tiny', '--set', *SETS)
    assert rc == 0 and 'Traceback' not in out, out[-3000:]
    for t in ('dino', 'sam'): assert (tmp_path/'exp'/t/'teacher'/'teacher_card.json').is_file()
    # the labeller walks the same folder through its links, and names each image as the COCO file does
    (images/'loop').symlink_to('.')  # a symlink cycle must not hang the walk
    rc, out = run('teacher-lora-label', '--exp', tmp_path/'exp', '--images', images, '--out', tmp_path/'labels.json', '--workers', '0')
    assert rc == 0 and 'Traceback' not in out, out[-3000:]
    names = lambda f: sorted(i['file_name'] for i in json.loads(Path(f).read_text())['images'])
    assert names(tmp_path/'labels.json') == names(ann)


def test_escaping_file_names_refused(shapes, tmp_path):
    d = json.loads(shapes.read_text())
    d['images'][0]['file_name'], d['images'][1]['file_name'] = '../../etc/passwd', '/etc/passwd'
    (tmp_path/'bad.json').write_text(json.dumps(d))
    rc, out = run('teacher-lora-validate', '--data', tmp_path/'bad.json', '--images', shapes.parent/'images')
    assert rc == 1 and 'Traceback' not in out, out
    assert 'path-escape (2)' in out and "'../../etc/passwd'" in out and "'/etc/passwd'" in out, out
