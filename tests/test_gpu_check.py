"""benchmarks/gpu_check.py, the prepared GPU check, runs end to end: `--dry-run` on the CPU with the tiny teachers."""
import json, os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = (r"gpu_check: DINO LoRA peak (\d+\.\d|OOM|-) GB \(cache\) / (\d+\.\d|OOM|-) GB, SAM LoRA (\d+\.\d|OOM|-) / (\d+\.\d|OOM|-) GB, "
            r"12 GB goal (PASS|FAIL|incomplete|n/a \(CPU\)); (bf16|fp16|fp32) losses (finite|NOT finite|unchecked); labelling (\d+\.\d|-) img/s")


def test_dry_run(tmp_path):
    out = tmp_path/'gpu_check.json'
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_check.py'), '--dry-run', '--out', str(out)], capture_output=True, text=True,
                       timeout=900, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '2', 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(HEADLINE, last)
    assert m, last
    assert m[5] == 'n/a (CPU)' and m[6] == 'fp32' and m[7] == 'finite', last  # a CPU run: no GPU goal, fp32, every loss finite
    assert all(x not in ('-', 'OOM') for x in m.group(1, 2, 3, 4, 8)), last  # every LoRA case and the labelling ran
    d = json.loads(out.read_text())
    assert d['headline'] == last
    rows = {x['section']: x for x in d['rows']}
    assert {'dino_lora', 'dino_cache', 'sam_lora', 'sam_cache', 'label', 'dino_full', 'sam_full'} <= {k for k, x in rows.items() if x['status'] == 'ok'}, \
        {k: x['status'] for k, x in rows.items()}
    assert rows['label_bf16']['status'].startswith('skipped')  # bf16 only on CUDA
    assert 'hits' in rows['dino_cache']['cache'] and rows['sam_cache']['steps'] >= 1
    assert 'Traceback' not in r.stderr
