"Weight files that safe loading refuses (a pickle of other objects, a list instead of a state dict): a message naming the file and why, exit 2, never the advice to load it unsafely."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from teacher_lora.teachers import DINO_LORA_TARGETS, TeacherError, apply_lora, load_dino, load_teacher, save_teacher, teacher_card, tiny_dino

BIN = Path(sys.executable).parent

class Payload:
    "Unpickling this runs a function: what a malicious weight file does."
    def __reduce__(self): return (os.system, ('echo pwned',))

def pickled(path, obj=None):
    torch.save({'w': Payload()} if obj is None else obj, path); return path

@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    "A tiny Grounding DINO teacher folder whose adapter is an `adapter_model.bin` holding a pickled object."
    d = tmp_path_factory.mktemp('t')/'teacher'
    save_teacher(apply_lora(tiny_dino(), DINO_LORA_TARGETS, r=2, alpha=4), d, teacher_card('grounding_dino', dict(id='tiny'), ['circle'], [1], dict(r=2, alpha=4)))
    (d/'adapter_model.safetensors').unlink(); pickled(d/'adapter_model.bin')
    return d

def test_label_refuses_pickled_adapter(teacher, tmp_path):
    "The console script: exit 2 (not 3), the file and the reason named, no 'weights_only=False'."
    from teacher_lora.test_utils import shapes_dataset
    shapes_dataset(tmp_path/'s', 1)
    r = subprocess.run([str(BIN/'teacher-lora-label'), '--exp', str(teacher), '--images', str(tmp_path/'s'/'images'), '--out', str(tmp_path/'l.json')],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{teacher/'adapter_model.bin'} (LoRA adapter): refused: it holds a Python object" in r.stderr, r.stderr
    assert 'weights_only' not in r.stderr and 'Traceback' not in r.stderr and 'pwned' not in r.stdout + r.stderr

def test_refusals_name_the_file(teacher, tmp_path):
    "A pickled `pytorch_model.bin` of a Grounding DINO folder, a resume `state.pt`, a `.pth` holding a list."
    with pytest.raises(TeacherError, match='adapter_model.bin .LoRA adapter.: refused'): load_teacher(teacher)
    tiny_dino().config.save_pretrained(tmp_path/'dino')  # a folder with its weights as a pickle
    pickled(tmp_path/'dino'/'pytorch_model.bin')
    with pytest.raises(TeacherError, match=r'pytorch_model.bin \(Grounding DINO .*\): refused: it holds a Python object \(posix.system\)'): load_dino(str(tmp_path/'dino'))
    from safetensors.torch import save_file
    from teacher_lora.train import load_checkpoint
    ck = tmp_path/'update-0000001'; ck.mkdir(); save_file({}, ck/'adapter.safetensors'); pickled(ck/'state.pt')
    with pytest.raises(TeacherError, match=r'state.pt \(resume state\): refused') as e: load_checkpoint(ck, None, None, None, None)
    assert 'weights_only' not in str(e.value)
    from teacher_lora.teachers import load_sam
    with pytest.raises(TeacherError, match=r'list.pth \(SAM tiny\): refused: it holds a list, not a state dict'):
        load_sam('tiny', pickled(tmp_path/'list.pth', [torch.zeros(2)]))
