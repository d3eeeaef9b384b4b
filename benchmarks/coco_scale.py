"""Scale benchmark: `teacher_lora.coco` against `pycocotools.coco.COCO` on a large COCO file.

Generates (once, cached) a deterministic synthetic COCO detection/segmentation file --
100,000 images and 1,000,000 polygon annotations by default -- then times, each in a fresh
subprocess so that peak memory is that process's own:

* baseline: ``pycocotools.coco.COCO(path)`` (JSON load + ``createIndex``);
* ours: ``load_coco(path)``, ``inspect_dataset(d)`` and ``validate_coco(d)``.

Each side runs ``--repeats`` times; the best time and the largest peak RSS are reported, with
PASS/FAIL against the targets (ours at most 2x pycocotools in time and in peak memory). The
last line printed is a one-line headline. The exit code is 0 whatever the verdict; it is
non-zero only when something crashes (including ours reporting validation errors or wrong
counts on the synthetic data, which is valid by construction). Linux only: memory is read
from /proc/self/status.

Usage::

    python benchmarks/coco_scale.py                       # full scale (file cached in /tmp)
    python benchmarks/coco_scale.py --images 1000 --anns 10000 --repeats 1   # smoke test
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TIME_TARGET = 2.0  # ours total time <= TIME_TARGET x pycocotools COCO()
MEMORY_TARGET = 2.0  # ours peak RSS <= MEMORY_TARGET x pycocotools COCO()
N_CATEGORIES = 80
SEED = 0


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


def _polygons(rng, widths, heights, n_anns):
    """Star-shaped polygons that fit inside their images, with their tight boxes and areas.

    Each polygon has 6-12 vertices at strictly increasing angles around a centre (so it is
    simple), radii 60-100% of an ellipse kept at least 1 px inside the image. Coordinates are
    rounded to 2 decimals *before* the box and the shoelace area are computed from them, so the
    three agree exactly: the polygon lies in the box and ``area <= w * h``.
    Returns ``(n_vertices, coords, bboxes, areas)``: ``coords`` is the flat interleaved
    ``x1, y1, x2, y2, ...`` array of all polygons, ``bboxes`` is ``(n_anns, 4)`` xywh.
    """
    import numpy as np

    n_vertices = rng.integers(6, 13, size=n_anns)
    rx = rng.uniform(4.0, 0.25 * widths)  # ellipse semi-axes: boxes from ~8 px to half the image
    ry = rng.uniform(4.0, 0.25 * heights)
    cx = rng.uniform(rx + 1.0, widths - rx - 1.0)
    cy = rng.uniform(ry + 1.0, heights - ry - 1.0)

    starts = np.concatenate(([0], np.cumsum(n_vertices)[:-1]))
    owner = np.repeat(np.arange(n_anns), n_vertices)  # annotation index of each vertex
    k = np.arange(owner.size) - starts[owner]  # vertex index within its polygon
    theta = 2 * np.pi * (k + rng.uniform(0.0, 1.0, owner.size)) / n_vertices[owner]
    radius = rng.uniform(0.6, 1.0, owner.size)
    x = np.round(cx[owner] + radius * rx[owner] * np.cos(theta), 2)
    y = np.round(cy[owner] + radius * ry[owner] * np.sin(theta), 2)

    x0, y0 = np.minimum.reduceat(x, starts), np.minimum.reduceat(y, starts)
    x1, y1 = np.maximum.reduceat(x, starts), np.maximum.reduceat(y, starts)
    bboxes = np.stack([x0, y0, np.round(x1 - x0, 2), np.round(y1 - y0, 2)], axis=1)

    nxt = np.arange(1, owner.size + 1)  # next vertex, wrapping to the polygon's first
    ends = starts + n_vertices - 1
    nxt[ends] = starts
    areas = np.round(np.abs(np.add.reduceat(x * y[nxt] - x[nxt] * y, starts)) / 2, 2)

    coords = np.stack([x, y], axis=1).ravel()
    return n_vertices, coords, bboxes, areas


def make_synthetic_coco(n_images, n_anns, seed=SEED):
    """Build a valid COCO dict with `n_images` images and `n_anns` polygon annotations.

    Image sizes vary around 640x480; every image gets at least one annotation when
    `n_anns >= n_images`, the rest are spread at random; annotations are ordered by image.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    widths = rng.integers(560, 721, size=n_images)
    heights = rng.integers(400, 561, size=n_images)
    images = [
        {"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": w, "height": h}
        for i, (w, h) in enumerate(zip(widths.tolist(), heights.tolist()))
    ]
    categories = [
        {"id": c, "name": f"category_{c:02d}", "supercategory": f"group_{(c - 1) // 10}"}
        for c in range(1, N_CATEGORIES + 1)
    ]

    covered = np.arange(min(n_images, n_anns))
    extra = rng.integers(0, n_images, size=n_anns - covered.size)
    img_idx = np.sort(np.concatenate([covered, extra]))
    cat_ids = rng.integers(1, N_CATEGORIES + 1, size=n_anns)
    n_vertices, coords, bboxes, areas = _polygons(rng, widths[img_idx], heights[img_idx], n_anns)

    flat = coords.tolist()
    ends = (2 * np.cumsum(n_vertices)).tolist()
    annotations = [
        {
            "id": a + 1,
            "image_id": i + 1,
            "category_id": c,
            "bbox": box,
            "area": area,
            "iscrowd": 0,
            "segmentation": [flat[end - 2 * nv:end]],
        }
        for a, (i, c, box, area, nv, end) in enumerate(zip(
            img_idx.tolist(), cat_ids.tolist(), bboxes.tolist(), areas.tolist(),
            n_vertices.tolist(), ends))
    ]
    return {
        "info": {"description": f"teacher_lora synthetic COCO (seed {seed})", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def ensure_dataset(workdir, n_images, n_anns):
    """Return the path of the cached synthetic file for this size, generating it if missing."""
    import orjson

    path = Path(workdir) / f"coco_scale_{n_images}img_{n_anns}ann_seed{SEED}.json"
    if path.exists():
        print(f"using cached {path}")
        return path
    print(f"generating {path} ...", flush=True)
    tic = time.perf_counter()
    gc.disable()  # ~2.5x faster: millions of new containers otherwise trigger full collections
    try:
        data = orjson.dumps(make_synthetic_coco(n_images, n_anns))
    finally:
        gc.enable()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic: an interrupted run never leaves a truncated cache
    print(f"generated in {time.perf_counter() - tic:.1f}s")
    return path


# ---------------------------------------------------------------------------------------------
# Child processes (one measurement each)
# ---------------------------------------------------------------------------------------------


def _rss_mib(field):
    """`VmHWM` (peak) or `VmRSS` (current) of this process in MiB, from /proc/self/status.

    VmHWM belongs to this process's own address space, so unlike `ru_maxrss` it cannot inherit
    the parent's high-water mark across fork/exec.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_pycocotools(path):
    """Time `COCO(path)` (load + createIndex); return the measurement dict."""
    from pycocotools.coco import COCO

    import_mib = _rss_mib("VmRSS")
    tic = time.perf_counter()
    COCO(str(path))
    total = time.perf_counter() - tic
    return {"total": total, "import_mib": import_mib, "peak_mib": _rss_mib("VmHWM")}


def run_ours(path, n_images, n_anns):
    """Time `load_coco`, `inspect_dataset` and `validate_coco`; check counts and no errors."""
    from teacher_lora.coco import inspect_dataset, load_coco, validate_coco

    import_mib = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    d = load_coco(path)
    t1 = time.perf_counter()
    info = inspect_dataset(d)
    t2 = time.perf_counter()
    report = validate_coco(d)
    t3 = time.perf_counter()
    peak_mib = _rss_mib("VmHWM")

    counts = (info.n_images, info.n_annotations)
    if counts != (n_images, n_anns):
        raise SystemExit(f"inspect_dataset counted {counts}, expected {(n_images, n_anns)}")
    if report.errors:
        shown = "\n".join(f"  {e}" for e in report.errors[:20])
        raise SystemExit(f"validate_coco found {len(report.errors)} errors on valid data:\n{shown}")
    return {"total": t3 - t0, "load": t1 - t0, "inspect": t2 - t1, "validate": t3 - t2,
            "import_mib": import_mib, "peak_mib": peak_mib, "n_warnings": len(report.warnings)}


def measure(side, path, n_images, n_anns):
    """Run one measurement of `side` in a fresh Python process and return its result dict."""
    cmd = [sys.executable, __file__, "--child", side, "--path", str(path),
           "--images", str(n_images), "--anns", str(n_anns)]
    env = dict(os.environ)  # benchmark this checkout, whether or not teacher_lora is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{side} child failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.splitlines()[-1])  # last line: COCO() prints progress first


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def summarize(runs):
    """Best run (by total time) of one side, with peak/import RSS taken as the max over runs."""
    best = dict(min(runs, key=lambda r: r["total"]))
    best["peak_mib"] = max(r["peak_mib"] for r in runs)
    best["import_mib"] = max(r["import_mib"] for r in runs)
    return best


def print_report(base, ours, path, n_images, n_anns, repeats):
    """Print the comparison table, the targets with PASS/FAIL, and the headline (last line)."""
    time_ratio = ours["total"] / base["total"]
    mem_ratio = ours["peak_mib"] / base["peak_mib"]
    size_mib = path.stat().st_size / 2**20
    print(f"\n{path} ({size_mib:.0f} MiB): {n_images} images, {n_anns} annotations; "
          f"best of {repeats} run(s) per side, peak RSS = max over runs (VmHWM)")
    header = f"{'':<28}{'seconds':>9}{'x pycoco':>10}{'peak MiB':>10}{'x pycoco':>10}" \
             f"{'peak-import':>13}"
    print(header)
    print("-" * len(header))

    def row(label, seconds, peak=None, imported=None):
        cells = f"{label:<28}{seconds:>9.2f}{seconds / base['total']:>9.2f}x"
        if peak is not None:
            cells += f"{peak:>10.0f}{peak / base['peak_mib']:>9.2f}x{peak - imported:>13.0f}"
        print(cells)

    row("pycocotools COCO()", base["total"], base["peak_mib"], base["import_mib"])
    row("ours total", ours["total"], ours["peak_mib"], ours["import_mib"])
    for part, func in (("load", "load_coco"), ("inspect", "inspect_dataset"),
                       ("validate", "validate_coco")):
        row(f"  {func}", ours[part])
    print(f"import-only RSS: pycocotools {base['import_mib']:.0f} MiB, "
          f"ours {ours['import_mib']:.0f} MiB; validate_coco warnings: {ours['n_warnings']}")

    print("\ntargets:")
    for name, ratio, target in (("time", time_ratio, TIME_TARGET),
                                ("peak memory", mem_ratio, MEMORY_TARGET)):
        verdict = "PASS" if ratio <= target else "FAIL"
        print(f"  {name:<12} ours <= {target:g}x pycocotools: {ratio:.2f}x  {verdict}")
    print(f"coco_scale: time {time_ratio:.2f}x, memory {mem_ratio:.2f}x pycocotools "
          f"({n_images} images, {n_anns} annotations)")


def main(argv=None):
    """Parse arguments; either run one child measurement or the whole benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=100_000, help="number of images (default 100000)")
    p.add_argument("--anns", type=int, default=1_000_000,
                   help="number of annotations (default 1000000)")
    p.add_argument("--repeats", type=int, default=2, help="runs per side; best time is kept")
    p.add_argument("--workdir", type=Path, default=Path("/tmp"),
                   help="where the synthetic file is cached (default /tmp)")
    p.add_argument("--child", choices=["pycocotools", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child == "pycocotools":
        print(json.dumps(run_pycocotools(args.path)))
        return
    if args.child == "ours":
        print(json.dumps(run_ours(args.path, args.images, args.anns)))
        return

    path = ensure_dataset(args.workdir, args.images, args.anns)
    runs = {"pycocotools": [], "ours": []}
    for i in range(args.repeats):  # interleaved, so drift in machine load hits both sides
        for side, side_runs in runs.items():
            result = measure(side, path, args.images, args.anns)
            side_runs.append(result)
            print(f"run {i + 1}/{args.repeats} {side:<11}: {result['total']:.2f}s, "
                  f"peak {result['peak_mib']:.0f} MiB", flush=True)
    print_report(summarize(runs["pycocotools"]), summarize(runs["ours"]), path,
                 args.images, args.anns, args.repeats)


if __name__ == "__main__":
    main()
