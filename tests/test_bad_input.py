"""Bad input met by the console scripts as a user runs them: a clear message naming the file, exit 2, no traceback."""
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from teacher_lora.test_utils import shapes_dataset

BIN = Path(sys.executable).parent
SMALL = ['train.epochs=1', 'train.batch_size=1', 'preprocess.dino_shortest=128', 'preprocess.dino_longest=160']


def run(*args, cwd=None):
    "Run a console script; return (exit code, stdout, stderr)."
    r = subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, cwd=cwd, timeout=600)
    return r.returncode, r.stdout, r.stderr


def truncate(path):
    "Cut an image file in half, as an interrupted copy leaves it."
    b = path.read_bytes(); path.write_bytes(b[:len(b) // 2])


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "A small shapes dataset, a copy of it with one truncated image, and a tiny experiment trained on the good one."
    root = tmp_path_factory.mktemp('bad')
    ann = shapes_dataset(root/'good', 6, seed=1, background='plain', scale=(.3, .55))
    shutil.copytree(root/'good', root/'broken')
    bad = root/'broken'/'images'/json.loads(ann.read_text())['images'][2]['file_name']
    truncate(bad)
    rc, out, err = run('teacher-lora-train', '--data', ann, '--val', ann, '--images', root/'good'/'images', '--output', root/'exp',
                       '--dino', 'tiny', '--sam', 'tiny', '--set', *SMALL, 'data.workers=0')
    assert rc == 0, out + err
    return dict(root=root, ann=root/'broken'/'annotations.json', images=root/'broken'/'images', bad=bad, exp=root/'exp')


def check_named(rc, out, err, bad):
    assert rc == 2, f"exit {rc}\n{out}\n{err}"
    assert bad.name in err and 'cannot decode image' in err, err
    assert 'Traceback' not in out + err and 'internal error' not in err, err


def test_validate_reports_the_truncated_image(data):
    rc, out, err = run('teacher-lora-validate', '--data', data['ann'], '--images', data['images'])
    assert rc == 1 and 'image-unreadable' in out and data['bad'].name in out and 'truncated' in out, out + err


@pytest.mark.parametrize('workers', [0, 2])
def test_train_stops_naming_the_image(data, tmp_path, workers):
    "Met in a loader worker process or in the main one: the same one-line message."
    rc, out, err = run('teacher-lora-train', '--data', data['ann'], '--val', data['ann'], '--images', data['images'], '--output', tmp_path/'exp',
                       '--dino', 'tiny', '--sam', 'tiny', '--set', *SMALL, f'data.workers={workers}')
    check_named(rc, out, err, data['bad'])
    assert 'Original Traceback' not in err


def test_evaluate_stops_naming_the_image(data, tmp_path):
    rc, out, err = run('teacher-lora-evaluate', '--exp', data['exp'], '--data', data['ann'], '--images', data['images'], '--out', tmp_path/'eval')
    check_named(rc, out, err, data['bad'])


def test_label_labels_the_rest_and_names_the_image(data, tmp_path):
    "The readable images are labelled; the unreadable one is named, listed in the file, and tried again by a rerun."
    out_file = tmp_path/'labels.json'
    rc, out, err = run('teacher-lora-label', '--exp', data['exp'], '--images', data['images'], '--out', out_file, '--threshold', '0.1')
    check_named(rc, out, err, data['bad'])
    d = json.loads(out_file.read_text())
    assert len(d['images']) == 5 and [u['file_name'] for u in d['info']['unreadable']] == [data['bad'].name]
    shutil.copy(data['root']/'good'/'images'/data['bad'].name, data['bad'])  # the user re-exports the image
    rc, out, err = run('teacher-lora-label', '--exp', data['exp'], '--images', data['images'], '--out', out_file, '--threshold', '0.1')
    assert rc == 0, out + err
    d = json.loads(out_file.read_text())
    assert len(d['images']) == 6 and 'unreadable' not in d['info']
    truncate(data['bad'])  # leave the fixture as it was for the other tests


def test_roboflow_unused_category_stays_out_of_the_prompt(tmp_path):
    "Roboflow's dataset-name category 0 (no annotations): trained with the three real classes; results keep the file's ids."
    ann = shapes_dataset(tmp_path/'rf', 6, seed=2, background='plain', scale=(.3, .55))
    d = json.loads(ann.read_text()); d['categories'].insert(0, dict(id=0, name='shapes-xyz', supercategory='none'))
    ann.write_text(json.dumps(d))
    rc, out, err = run('teacher-lora-train', '--data', ann, '--images', ann.parent/'images', '--output', tmp_path/'exp',
                       '--dino', 'tiny', '--sam', 'tiny', '--set', *SMALL, 'data.workers=0', 'data.val_fraction=0.34')
    assert rc == 0, out + err
    assert out.count('without annotations left out of the prompt and the teachers: shapes-xyz') == 1, out
    card = json.loads((tmp_path/'exp'/'dino'/'teacher'/'teacher_card.json').read_text())
    assert card['names'] == ['circle', 'square', 'triangle'] and card['cat_ids'] == [1, 2, 3]
    assert [p['prompt'] for p in card['prompts']] == ['circle . square . triangle .']
    rc, out, err = run('teacher-lora-evaluate', '--exp', tmp_path/'exp', '--data', ann, '--images', ann.parent/'images', '--no-base')
    assert rc == 0, out + err
    res = json.loads((tmp_path/'exp'/'eval'/'dino_boxes.json').read_text())
    assert res and {r['category_id'] for r in res} <= {1, 2, 3}


def frame_cases(root):
    "A shapes dataset whose image 1 was resized after labelling, and one whose image 1 is a JPEG in the stored frame with EXIF orientation 6."
    from PIL import Image
    out = {}
    for case in ('resized', 'exif'):
        ann = shapes_dataset(root/case, 3, seed=1, background='plain', scale=(.3, .55))
        d = json.loads(ann.read_text()); im = d['images'][0]; p = ann.parent/'images'/im['file_name']
        if case == 'resized': Image.open(p).resize((im['width'] // 2, im['height'] // 2)).save(p)
        else:
            ex = Image.Exif(); ex[0x0112] = 6
            Image.open(p).convert('RGB').save(p.with_suffix('.jpg'), exif=ex); im['file_name'] = p.with_suffix('.jpg').name
        ann.write_text(json.dumps(d)); out[case] = ann
    return out


def test_train_checks_the_frame_against_the_image_files(tmp_path):
    "Item 1: the JSON size is checked against each image's header before training: a resized file or a stored-frame EXIF photo is refused, exit 2."
    cases = frame_cases(tmp_path)
    ann = cases['resized']
    rc, out, err = run('teacher-lora-train', '--data', ann, '--images', ann.parent/'images', '--output', tmp_path/'exp',
                       '--dino', 'tiny', '--sam', 'tiny', '--set', *SMALL, 'data.workers=0')
    assert rc == 2 and 'size-mismatch' in err and 'JSON says 240x320, 00001.png is 120x160' in err, out + err
    assert 'Traceback' not in err and not (tmp_path/'exp').exists()
    from teacher_lora.train import train, TrainError
    ann = cases['exif']
    with pytest.raises(TrainError, match=r'exif-frame .*JSON says 240x320, the stored pixels of 00001.jpg; its EXIF orientation 6'):
        train(ann, ann.parent/'images', tmp_path/'exp2', dino='tiny', sam='tiny', sets=SMALL)


def test_train_refuses_a_file_mixing_masks_and_boxes(tmp_path):
    "Masks on some annotations, none on one: exit 2 with the validator's finding (naming annotation and image), before any model loads; a --val file too."
    from teacher_lora.test_utils import tiny_coco, write_coco
    from teacher_lora.train import train, TrainError
    d = tiny_coco(); ann = write_coco(d, tmp_path/'mixed')
    d['annotations'][0].pop('segmentation'); ann.write_text(json.dumps(d))
    rc, out, err = run('teacher-lora-train', '--data', ann, '--images', ann.parent/'images', '--output', tmp_path/'exp', '--dino', 'tiny', '--sam', 'tiny')
    assert rc == 2 and 'segmentation-missing' in err and 'annotation 1' in err and 'image 1' in err, out + err
    assert 'Traceback' not in out + err and not (tmp_path/'exp').exists()
    good = write_coco(tiny_coco(), tmp_path/'good')
    with pytest.raises(TrainError, match='segmentation-missing'):
        train(good, good.parent/'images', tmp_path/'exp2', val=ann, dino='tiny', sam='tiny')
