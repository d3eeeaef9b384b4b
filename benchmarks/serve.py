#!/usr/bin/env python
"""Throughput and latency of `teacher-lora-serve` under load: one request at a time against 16 at once, for each --workers.

Serves the demo's tiny teachers (the shipped tiny pretrained Grounding DINO and SAM with the demo's preprocessing,
`teacher_lora.cli.DEMO_SETS`; by default fine-tuned here for one epoch on 8 target-domain images: inference costs the same
as after the demo's 12 epochs) with uvicorn in a subprocess, sends 200 requests of one demo image at concurrency 1
and 16 from `httpx`, and prints requests/s, p50/p95 latency and the batching gain; every request must succeed.
Each `--workers` value is a server of its own (default: 1, then 2, the command's default on two cores); the headline is the last.

    python benchmarks/serve.py [--exp teacher_lora_demo/exp] [--workers 1 2] [--out benchmarks/results/serve.txt]
"""
import argparse, asyncio, os, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import httpx

def demo_experiment(folder:Path)->tuple:
    "A one-epoch experiment of the demo's teachers in `folder`, and one of its images."
    from teacher_lora.cli import DEMO_SETS
    from teacher_lora.test_utils import shapes_domain
    from teacher_lora.train import train
    data = shapes_domain(folder/'shapes', 8, 'target', seed=0)
    train(data, data.parent/'images', folder/'exp', epochs=1, sets=DEMO_SETS + ['data.val_fraction=.25', 'train.batch_size=2'])
    return folder/'exp', sorted((data.parent/'images').iterdir())[0]

def start(exp, port:int, threads:int, batch_size:int, wait_ms:float, workers:int):
    "`teacher-lora-serve` in a subprocess, once /health answers."
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'PYTHONWARNINGS': 'ignore'}
    script = Path(tempfile.mkdtemp())/'teacher-lora-serve'  # what pip writes for the console script (installed or not)
    script.write_text("import sys\nfrom teacher_lora.serve import serve_cli\nif __name__ == '__main__': sys.exit(serve_cli())\n")
    p = subprocess.Popen([sys.executable, str(script), '--exp', str(exp), '--port', str(port), '--batch-size', str(batch_size),
                          '--max-wait-ms', str(wait_ms), '--workers', str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            if httpx.get(f'http://127.0.0.1:{port}/health', timeout=1).status_code == 200: return p
        except httpx.TransportError: pass
        if p.poll() is not None: sys.exit(f"the server ended: {p.stderr.read()[-2000:]}")
        time.sleep(.2)
    p.kill(); sys.exit("the server did not answer /health within 120 s")

async def load(url:str, data:bytes, n:int, concurrency:int)->dict:
    "`n` POST /predict of `data`, `concurrency` at a time: requests/s, latency percentiles (ms), failures."
    lat, fails, next_i = [], [], iter(range(n))
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def worker():
            for _ in next_i:
                t = time.perf_counter()
                try: r = await c.post(url, files=dict(file=('demo.png', data)))
                except httpx.HTTPError as e: fails.append(repr(e)); continue
                lat.append(time.perf_counter() - t)
                if r.status_code != 200: fails.append(f"{r.status_code}: {r.text[:200]}")
        t0 = time.perf_counter(); await asyncio.gather(*[worker() for _ in range(concurrency)]); wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return dict(concurrency=concurrency, n=n, ok=len(lat) - len([f for f in fails if f[:3].isdigit()]), rps=n / wall, p50=q[49] * 1e3, p95=q[94] * 1e3, fails=fails)

def serve_and_load(exp, image, workers:int, a)->tuple:
    "Start a server with `workers`, warm it up, load it at each concurrency: (workers, results, model calls by batch size, seconds it took to stop on SIGTERM)."
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    p = start(exp, port, a.threads, a.batch_size, a.max_wait_ms, workers)
    try:
        url, data = f'http://127.0.0.1:{port}/predict', image.read_bytes()
        assert httpx.get(f'http://127.0.0.1:{port}/info').json()['limits']['workers'] == workers
        asyncio.run(load(url, data, 8, 1))  # warm-up
        res = [asyncio.run(load(url, data, a.n, c)) for c in a.concurrency]
        batches = httpx.get(f'http://127.0.0.1:{port}/info').json()['batches']['teachers']
    finally:
        t = time.perf_counter(); p.terminate()
        try: p.wait(30)
        except subprocess.TimeoutExpired: p.kill(); p.wait(); sys.exit(f"the server with {workers} workers did not stop within 30 s of SIGTERM")
    stop = time.perf_counter() - t
    print(f"workers {workers}: done ({[round(r['rps'], 2) for r in res]} requests/s); stopped {stop:.1f} s after SIGTERM", file=sys.stderr, flush=True)
    return workers, res, batches, stop

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--exp', help="an experiment to serve (default: train the demo's teachers for one epoch in a temporary folder)")
    ap.add_argument('--image', help="the image to send (default: the first of the generated demo images)")
    ap.add_argument('--n', type=int, default=200); ap.add_argument('--concurrency', type=int, nargs='+', default=[1, 16])
    ap.add_argument('--threads', type=int, default=2, help="the server's torch threads (OMP_NUM_THREADS), shared by its workers")
    ap.add_argument('--workers', type=int, nargs='+', default=[1, 2], help="model calls at once: one server per value")
    ap.add_argument('--batch_size', type=int, default=8); ap.add_argument('--max_wait_ms', type=float, default=5.)
    ap.add_argument('--out', help="also write the table to this file")
    ap.add_argument('--keep', help="build the default experiment in this folder (kept, and reused when it is there)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keep = Path(a.keep) if a.keep else None
        if a.exp: exp, image = Path(a.exp), Path(a.image)
        elif keep and (keep/'exp'/'dino'/'teacher').is_dir(): exp, image = keep/'exp', sorted((keep/'shapes'/'images').iterdir())[0]
        else: exp, image = demo_experiment(keep or Path(tmp))
        if a.image: image = Path(a.image)
        runs = [serve_and_load(exp, image, w, a) for w in a.workers]
        from PIL import Image
        w, h = Image.open(image).size  # before the temporary folder (and the image in it) is gone
    lines = [f"teacher-lora-serve: {a.n} requests of one {w}x{h} demo image per concurrency; teachers: tiny-pretrained Grounding DINO + SAM "
             f"(demo preprocessing), {os.cpu_count()} CPUs visible, server OMP_NUM_THREADS {a.threads} (shared by its workers), batch_size {a.batch_size}, max_wait_ms {a.max_wait_ms:g}",
             f"{'workers':>7} {'concurrency':>11} {'requests/s':>11} {'p50 ms':>8} {'p95 ms':>8} {'ok':>5} {'failed':>7}"]
    for wk, res, _, _ in runs:
        lines += [f"{wk:>7} {r['concurrency']:>11} {r['rps']:>11.2f} {r['p50']:>8.0f} {r['p95']:>8.0f} {r['ok']:>5} {len(r['fails']):>7}" for r in res]
    for wk, res, batches, stop in runs:
        lines.append(f"workers {wk}: model calls by batch size (warm-up included): {dict(sorted((int(k), v) for k, v in batches.items()))}; stopped {stop:.1f} s after SIGTERM")
        for r in res:
            if r['fails']: lines.append(f"FAILED with {wk} workers at concurrency {r['concurrency']}: {r['fails'][:3]}")
    for wk, res, _, _ in runs:
        lines.append(f"workers {wk}: {res[0]['rps']:.2f} -> {res[-1]['rps']:.2f} requests/s from concurrency {res[0]['concurrency']} to {res[-1]['concurrency']}: "
                     f"batching gain {res[-1]['rps'] / res[0]['rps']:.2f}x (target >= 1.5x); p50 {res[0]['p50']:.0f} -> {res[-1]['p50']:.0f} ms")
    (wk, res, _, _), best1 = runs[-1], max(r[1][0]['rps'] for r in runs)
    lines.append(f"headline (workers {wk}): batching gain {res[-1]['rps'] / res[0]['rps']:.2f}x (target >= 1.5x); over the best concurrency-1 rate of any server here "
                 f"({best1:.2f} requests/s): {res[-1]['rps'] / best1:.2f}x; {sum(len(r['fails']) for _, rs, _, _ in runs for r in rs)} of {a.n * len(a.concurrency) * len(runs)} requests failed")
    print('\n'.join(lines))
    if a.out: Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text('\n'.join(lines) + '\n')
    sys.exit(1 if any(r['fails'] for _, rs, _, _ in runs for r in rs) else 0)

if __name__ == '__main__': main()
