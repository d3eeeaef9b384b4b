"""Real weights by default, as a user's machine gets them: SAM's checkpoint downloaded once (from a local server standing in for Meta's),
Grounding DINO from a Hugging Face cache laid out by hand, offline; and the message when neither can be had."""
import json, os, subprocess, sys, warnings
from pathlib import Path
import pytest, torch
from teacher_lora.teachers import (SAM_CONFIGS, apply_lora, build_sam, file_sha256, load_sam, load_teacher, sam_base, save_teacher,
                                   teacher_card, tiny_dino, SAM_LORA_TARGETS)
from teacher_lora.test_utils import dead_url, local_server, shapes_dataset

BIN = Path(sys.executable).parent
DINO_ID, REV = 'IDEA-Research/grounding-dino-tiny', '0123456789abcdef0123456789abcdef01234567'
SAM_FILE = 'sam_vit_b_01ec64.pth'
SETS = ['preprocess.dino_shortest=128', 'preprocess.dino_longest=160', 'train.epochs=1', 'data.workers=0', 'train.batch_size=2',
        'data.val_fraction=0.34', 'train.log_every=1']

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "Three shapes images with boxes and masks (both teachers train): two to train, one to validate."
    d = tmp_path_factory.mktemp('shapes')
    return shapes_dataset(d, 3, seed=0, background='plain', scale=(.3, .55)), d/'images'

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "A local server standing in for Meta's download site: a random-weight, real-size vit_b state dict under the official file name."
    d = tmp_path_factory.mktemp('site')
    torch.manual_seed(0); torch.save(build_sam(**SAM_CONFIGS['vit_b']).state_dict(), d/SAM_FILE)
    with local_server(d) as (url, log): yield url, log, d/SAM_FILE

def hf_cache(home:Path)->Path:
    "A Hugging Face cache laid out by hand, as a download leaves it: the hub id's snapshot (a random-weight Grounding DINO) and refs/main."
    repo = home/'hub'/f"models--{DINO_ID.replace('/', '--')}"
    tiny_dino().save_pretrained(repo/'snapshots'/REV)
    (repo/'refs').mkdir(); (repo/'refs'/'main').write_text(REV)
    return home

def env(tmp:Path, sam_url:str, **kw)->dict:
    "A user's machine without the internet: empty torch and Hugging Face caches unless filled, downloads only from `sam_url`."
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp/'hf'), 'TORCH_HOME': str(tmp/'torch'),
            'TEACHER_LORA_SAM_URL': sam_url, **kw}

def train(ann, images, out, env, *extra):
    args = [str(BIN/'teacher-lora-train'), '--data', str(ann), '--images', str(images), '--output', str(out), *extra, '--set', *SETS]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)

def test_offline_nothing_cached_stops_before_writing(data, tmp_path):
    ann, images = data
    url = dead_url()
    r = train(ann, images, tmp_path/'exp', env(tmp_path, url))  # Grounding DINO is asked for first
    assert r.returncode == 2, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr
    assert f"Grounding DINO '{DINO_ID}' is not in the Hugging Face cache" in r.stderr and '--dino /path/to/folder' in r.stderr, r.stderr
    assert not (tmp_path/'exp').exists()
    r = train(ann, images, tmp_path/'exp', env(tmp_path, url), '--dino', 'tiny')  # then SAM's checkpoint
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert f"cannot download Meta's checkpoint {url}/{SAM_FILE}" in r.stderr and f'--sam vit_b:/path/{SAM_FILE}' in r.stderr, r.stderr
    assert not (tmp_path/'exp').exists()
    assert not list((tmp_path/'torch'/'hub'/'checkpoints').iterdir())  # no partial download left behind
    print(r.stderr)

def test_default_weights_downloaded_once_and_cached(data, site, tmp_path, monkeypatch):
    ann, images = data
    url, log, served = site
    hf_cache(tmp_path/'hf')
    n0 = len(log)
    r = train(ann, images, tmp_path/'exp', env(tmp_path, url))  # no --dino, no --sam: the defaults
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    assert log[n0:] == [f'/{SAM_FILE}'], log  # SAM: one download
    cached = tmp_path/'torch'/'hub'/'checkpoints'/SAM_FILE
    assert file_sha256(cached) == file_sha256(served) and not list(cached.parent.glob('*.partial'))
    cfg = (tmp_path/'exp'/'config.yaml').read_text()
    assert f'model: {DINO_ID}' in cfg and 'checkpoint: auto' in cfg
    card = json.loads((tmp_path/'exp'/'sam'/'teacher'/'teacher_card.json').read_text())
    assert card['base'] == dict(variant='vit_b', checkpoint=str(cached), url=f'{url}/{SAM_FILE}', sha256=file_sha256(served))
    snap = tmp_path/'hf'/'hub'/f"models--{DINO_ID.replace('/', '--')}"/'snapshots'/REV  # the DINO base: its commit and weights' hash
    assert json.loads((tmp_path/'exp'/'dino'/'teacher'/'teacher_card.json').read_text())['base'] == dict(id=DINO_ID, revision=REV, sha256=file_sha256(snap/'model.safetensors'))
    # the second time, in this process: the cached file, no request
    for k, v in env(tmp_path, url).items(): monkeypatch.setenv(k, v)
    sam = load_sam('vit_b', 'auto')
    assert torch.equal(sam.mask_decoder.iou_token.weight, torch.load(served, weights_only=True)['mask_decoder.iou_token.weight'])
    teacher, _ = load_teacher(tmp_path/'exp'/'sam'/'teacher')
    assert log[n0:] == [f'/{SAM_FILE}'], log
    # the cached file gone: loading the teacher downloads it again (same SHA-256, checked)
    cached.unlink()
    load_teacher(tmp_path/'exp'/'sam'/'teacher')
    assert log[n0:] == [f'/{SAM_FILE}'] * 2 and cached.is_file()

def test_random_weights_only_when_asked(tmp_path):
    "`random`: warned, said in the card, and rebuilt the same by `load_teacher` (seeded)."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        sam = load_sam('vit_b', 'random')
    assert any('SAM vit_b has random weights' in str(x.message) for x in w)
    card = teacher_card('sam', sam_base('vit_b', 'random'), ['circle'], [1], dict(r=4, alpha=8))
    assert card['base'] == dict(variant='vit_b', checkpoint='random')
    save_teacher(apply_lora(sam, SAM_LORA_TARGETS, r=4, alpha=8), tmp_path/'t', card)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        back, _ = load_teacher(tmp_path/'t')
    assert any('random weights' in str(x.message) for x in w)
    a, b = load_sam('vit_b', 'random').image_encoder.state_dict(), back.get_base_model().image_encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
