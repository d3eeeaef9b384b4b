"Class names and teacher folders as untrusted input: names Grounding DINO cannot tell apart stop training before it starts; a teacher card from someone else cannot demand any size or make the tool contact the hub."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from teacher_lora.teachers import (SAM_LORA_TARGETS, TeacherError, apply_lora, dino_base, file_sha256, load_teacher, save_teacher, teacher_card,
                                   tiny_dino, tiny_sam, _dino_base_model)
from teacher_lora.test_utils import local_server, shapes_dataset

BIN = Path(sys.executable).parent
DINO_ID, REV = 'IDEA-Research/grounding-dino-tiny', '0123456789abcdef0123456789abcdef01234567'

def run(*args, **env):
    return subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore', **env})

def test_train_refuses_names_with_the_same_tokens(tmp_path):
    "Two emoji are both [UNK] to Grounding DINO: exit 2 before anything is written, naming both classes and the fix."
    ann = shapes_dataset(tmp_path/'s', 2, classes=('circle', 'square'))
    d = json.loads(ann.read_text()); d['categories'][0]['name'], d['categories'][1]['name'] = '😀', '🐱'
    ann.write_text(json.dumps(d))
    r = run('teacher-lora-train', '--data', ann, '--images', tmp_path/'s'/'images', '--output', tmp_path/'exp', '--dino', 'tiny', '--sam', 'tiny')
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert "same-tokens" in r.stderr and "'🐱' and '😀'" in r.stderr and 'rename them' in r.stderr, r.stderr
    assert not (tmp_path/'exp').exists()
    r = run('teacher-lora-validate', '--data', ann)
    assert r.returncode != 0 and 'same-tokens' in r.stdout + r.stderr

@pytest.fixture
def sam_teacher(tmp_path):
    "A tiny SAM teacher folder whose base is described by its configuration."
    cfg = dict(embed_dim=32, depth=2, num_heads=2, global_attn=[1], img_size=256, window=4, prompt_dim=32, mlp_dim=64, decoder_heads=2, iou_hidden=32)
    save_teacher(apply_lora(tiny_sam(), SAM_LORA_TARGETS, r=2, alpha=4), tmp_path/'sam', teacher_card('sam', dict(config=cfg, checkpoint='random'), ['circle'], [1], dict(r=2, alpha=4)))
    return tmp_path/'sam'

def test_card_cannot_demand_any_size(sam_teacher):
    "A SAM card asking for a 51.6B-parameter encoder is refused before anything is allocated."
    load_teacher(sam_teacher)  # the honest card loads
    p = sam_teacher/'teacher_card.json'; c = json.loads(p.read_text())
    c['base']['config'] |= dict(embed_dim=8192, depth=64, num_heads=16, global_attn=[63]); p.write_text(json.dumps(c))
    with pytest.raises(TeacherError, match='asks for a model of 51.6B parameters'): load_teacher(sam_teacher)

def test_card_naming_another_repo_contacts_no_hub(tmp_path):
    "A DINO card naming an unknown repository: exit 2 from teacher-lora-label, and not one request to the hub (a local server stands in for it)."
    t = tmp_path/'dino'
    save_teacher(apply_lora(tiny_dino(), r'.*decoder\.layers\.\d+\.fc1', r=2, alpha=4), t, teacher_card('grounding_dino', dict(id='tiny'), ['circle'], [1], dict(r=2, alpha=4)))
    c = json.loads((t/'teacher_card.json').read_text()); c['base'] = dict(id='attacker/evil-repo'); (t/'teacher_card.json').write_text(json.dumps(c))
    shapes_dataset(tmp_path/'s', 1)
    (tmp_path/'hub').mkdir()
    with local_server(tmp_path/'hub') as (url, log):
        r = run('teacher-lora-label', '--exp', t, '--images', tmp_path/'s'/'images', '--out', tmp_path/'l.json',
                HF_ENDPOINT=url, HF_HUB_OFFLINE='0', HF_HOME=str(tmp_path/'hf'))
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert "names Grounding DINO base 'attacker/evil-repo', which is not in the Hugging Face cache" in r.stderr, r.stderr
    assert log == []

def test_dino_base_recorded_and_checked(tmp_path, monkeypatch):
    "A hub id's card records the cached snapshot's commit and the weights' SHA-256; loading reads that snapshot from the cache and checks the hash."
    import huggingface_hub.constants as C
    repo = tmp_path/'hub'/f"models--{DINO_ID.replace('/', '--')}"
    tiny_dino().save_pretrained(repo/'snapshots'/REV); (repo/'refs').mkdir(); (repo/'refs'/'main').write_text(REV)
    monkeypatch.setattr(C, 'HF_HUB_CACHE', str(tmp_path/'hub')); monkeypatch.setattr(C, 'HF_HUB_OFFLINE', True)
    b = dino_base(DINO_ID)
    assert b == dict(id=DINO_ID, revision=REV, sha256=file_sha256(repo/'snapshots'/REV/'model.safetensors'))
    m = _dino_base_model(b)
    assert torch.equal(m.state_dict()['model.level_embed'], tiny_dino().state_dict()['model.level_embed'])
    with pytest.raises(TeacherError, match="SHA-256 differs"): _dino_base_model(b | dict(sha256='0' * 64))

def test_damaged_teacher_folder_named(sam_teacher, tmp_path):
    "A teacher folder that is damaged or mixed up is refused with the file named and the fix, never loaded half-way: peft alone loads a foreign adapter with only a warning."
    import shutil
    def damaged(f):
        d = tmp_path/f'case{len(list(tmp_path.iterdir()))}'; shutil.copytree(sam_teacher, d); f(d); return d
    card = lambda d: d/'teacher_card.json'
    edit = lambda **kw: lambda d: card(d).write_text(json.dumps(json.loads(card(d).read_text()) | kw))
    cases = {'cannot be read as JSON': lambda d: card(d).write_text(card(d).read_text()[:50]),
             'holds a list': lambda d: card(d).write_text('[]'),
             "'names' and 'cat_ids'": edit(names=['circle', 'square']),
             "'thresholds' is not a mapping": edit(thresholds='lots'),
             'no adapter_model.safetensors': lambda d: (d/'adapter_model.safetensors').unlink(),
             'cannot be loaded onto': lambda d: (d/'adapter_config.json').write_text('{"r": "x"}')}
    for msg, f in cases.items():
        with pytest.raises(TeacherError, match=msg): load_teacher(damaged(f))
    other = tmp_path/'other'  # the same rank on fewer layers: what a teacher trained with other targets saves
    save_teacher(apply_lora(tiny_sam(), r'mask_decoder\.transformer\..*(q_proj|k_proj)', r=2, alpha=4), other, json.loads(card(sam_teacher).read_text()))
    d = damaged(lambda d: shutil.copy(other/'adapter_model.safetensors', d/'adapter_model.safetensors'))
    with pytest.raises(TeacherError, match='do not fit the card'): load_teacher(d)
