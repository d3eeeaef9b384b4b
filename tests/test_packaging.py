"""The package as pip builds it: the wheel carries the modules, the tokenizer vocabulary, the pretrained tiny teachers and the console scripts."""
import subprocess, sys, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    whl = next(tmp_path.glob('teacher_lora-*.whl'))
    names = zipfile.ZipFile(whl).namelist()
    for f in ('teacher_lora/coco.py', 'teacher_lora/cli.py', 'teacher_lora/test_utils.py', 'teacher_lora/_modidx.py',
              'teacher_lora/assets/bert-base-uncased-vocab.txt', 'teacher_lora/pretrained.py'):
        assert f in names, f
    shipped = {n for n in names if n.startswith('teacher_lora/pretrained/')}
    assert shipped == {f'teacher_lora/pretrained/tiny_{k}.{e}' for k in ('dino', 'sam') for e in ('json', 'safetensors')}, shipped
    z = zipfile.ZipFile(whl)
    assert sum(z.getinfo(n).file_size for n in shipped) <= 10 * 2**20  # 10 MB in all
    ep = next(n for n in names if n.endswith('entry_points.txt'))
    assert 'teacher-lora-validate = teacher_lora.cli:validate_cli' in zipfile.ZipFile(whl).read(ep).decode()
