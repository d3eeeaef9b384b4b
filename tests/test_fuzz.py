"""Hundreds of broken inputs through the four console scripts (tests/fuzz.py): each ends in exit 0, 1 or 2 with a message,
never an internal error or a traceback, within bounded time and memory, and leaves its inputs unchanged."""
import subprocess, sys
from pathlib import Path

def test_fuzz(tmp_path):
    r = subprocess.run([sys.executable, str(Path(__file__).parent/'fuzz.py'), '--root', str(tmp_path/'fuzz')],
                       capture_output=True, text=True, timeout=3600)
    print(r.stdout[-6000:])
    tally = r.stdout.strip().splitlines()[-1]
    assert tally.startswith('fuzz: ') and int(tally.split()[1]) >= 200, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 0 and " 0 failed, 0 'internal error'" in tally, r.stdout[-6000:] + r.stderr[-3000:]
    assert (tmp_path/'fuzz'/'fuzz.log').read_text(errors='replace').count('internal error') == 0
