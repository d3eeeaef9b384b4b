"""The package as pip builds it: the wheel carries the modules, the tokenizer vocabulary and the console scripts."""
import subprocess, sys, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    whl = next(tmp_path.glob('teacher_lora-*.whl'))
    names = zipfile.ZipFile(whl).namelist()
    for f in ('teacher_lora/coco.py', 'teacher_lora/cli.py', 'teacher_lora/test_utils.py', 'teacher_lora/_modidx.py',
              'teacher_lora/assets/bert-base-uncased-vocab.txt'):
        assert f in names, f
    ep = next(n for n in names if n.endswith('entry_points.txt'))
    assert 'teacher-lora-validate = teacher_lora.cli:validate_cli' in zipfile.ZipFile(whl).read(ep).decode()
