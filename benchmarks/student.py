"""Teachers vs distilled students on the shapes target domain (CPU, <= 60 min with the demo's teachers already trained).

The teachers are the train demo's (`teacher-lora-train --demo`: the shipped tiny pretrained Grounding DINO and SAM, tuned with
LoRA on 72 target-domain images; `--exp` reuses such an experiment, else it is trained here). Their pseudo-labels of 2,000
generated unlabelled images (seed 1) teach three students, each given the same number of optimiser updates: the ground truth
alone (72 images), ground truth + the first 500 pseudo-labelled images, ground truth + all 2,000, composed as `distill` does
(the images the teachers found nothing in left out, the ground truth repeated to half of each epoch: `student.keep_empty`,
`student.gt_share`). Everything is scored on the demo's test split (24 images) by pycocotools. Speed, images/s at batch 1 on this CPU: the real-size teacher pipeline
(Grounding DINO-T at 800 px, then SAM ViT-B on its 4 best boxes, random weights: speed does not depend on weight values), the
student in PyTorch and the student exported to ONNX in onnxruntime.

    python benchmarks/student.py [--exp teacher_lora_demo/exp] [--work /tmp/student_bench] [--updates 560]
"""
import argparse, json, math, os, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, torch

warnings.filterwarnings('ignore')
HERE = Path(__file__).parent

def sh(*args, **kw):
    print('$', ' '.join(map(str, args)), flush=True)
    r = subprocess.run([str(a) for a in args], **kw)
    if r.returncode: sys.exit(f"failed: {args[0]} (exit {r.returncode})")

def teachers(a, work:Path)->Path:
    "The demo's teachers: `--exp`, or trained here by the demo recipe."
    if a.exp: return Path(a.exp)
    if not (work/'teacher_lora_demo'/'exp'/'dino'/'teacher').is_dir(): sh(Path(sys.executable).parent/'teacher-lora-train', '--demo', cwd=work)
    return work/'teacher_lora_demo'/'exp'

def unlabelled(work:Path, n:int)->Path:
    "`n` generated target-domain images (seed 1); their labels are never read."
    from teacher_lora.test_utils import shapes_domain
    if not (work/'unlabelled'/'annotations.json').exists(): shapes_domain(work/'unlabelled', n, 'target', seed=1)
    return work/'unlabelled'/'images'

def subset(labels:Path, n:int, out:Path)->Path:
    "The first `n` images of a label file (and their labels): the 500-image run reuses the 2,000-image labelling."
    d = json.loads(labels.read_text()); keep = {i['id'] for i in sorted(d['images'], key=lambda i: i['file_name'])[:n]}
    d['images'] = [i for i in d['images'] if i['id'] in keep]; d['annotations'] = [x for x in d['annotations'] if x['image_id'] in keep]
    out.write_text(json.dumps(d)); return out

def student(name, exp, files:dict, roots:dict, demo:Path, work:Path, updates:int, seed:int=0, workers:int=2)->dict:
    "Train one student for about `updates` optimiser updates on `files` (loader `workers` change nothing but the speed); its folder and validation record."
    from teacher_lora.student import _student_run, _student_setup
    from teacher_lora.train import make_accelerator
    from teacher_lora.config import save_config
    from teacher_lora.config import defaults
    from teacher_lora.student import pseudo_kept, gt_repeats
    sp = demo/'splits'; s = defaults()['student']
    n_gt = len(json.loads(Path(files['train']).read_text())['images']) if 'train' in files else 0
    n_p = len(pseudo_kept(json.loads(Path(files['pseudo']).read_text()), s['keep_empty'])['images']) if 'pseudo' in files else 0
    n = n_gt * gt_repeats(n_gt, n_p, s['gt_share']) + n_p  # an epoch, as the student's data makes it (ground truth repeated to its share)
    epochs = max(1, round(updates / (n // 8)))
    c, ti = _student_setup(exp, sp/'train.json', sp/'val.json', demo/'images', None,
                           ['student.weights=random', f'student.epochs={epochs}', 'student.updates=0', f'data.workers={workers}', 'checkpoint.patience=0', f'train.seed={seed}'])
    out = work/'students'/name
    if (out/'student'/'student_card.json').exists(): print(f"{name}: done before ({out})"); return dict(folder=out/'student', epochs=epochs, n=n, n_gt=n_gt, n_pseudo=n_p)
    out.mkdir(parents=True, exist_ok=True); save_config(c, out/'config.yaml')
    t = time.time(); r = _student_run(c, exp, files, roots, sp/'val.json', demo/'images', out, ti, make_accelerator(c, 'cpu'), resume=False)
    print(f"{name}: {n} images x {epochs} epochs ({epochs * (n // 8)} updates) in {time.time() - t:.0f} s; best val box AP50 {r['best']['ap50']:.3f}", flush=True)
    return r | dict(epochs=epochs, n=n, n_gt=n_gt, n_pseudo=n_p)

def real_pipeline():
    "The real-size teacher pipeline, random weights: Grounding DINO-T at 800 px, then SAM ViT-B at 1024 px on its 4 best boxes."
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection
    from teacher_lora.teachers import build_sam, SAM_CONFIGS, dino_tokenizer
    from teacher_lora.tasks import DinoTask, SamTask
    from teacher_lora.cache import FeatureCache
    from teacher_lora.data import DinoPreprocess
    from teacher_lora.evaluate import sam_masks, sam_frame_boxes
    from teacher_lora.predict import ImageFolder, find_images
    from teacher_lora.data import collate
    torch.manual_seed(0)
    names = ['circle', 'square', 'triangle', 'star', 'hexagon']
    d = DinoTask(GroundingDinoForObjectDetection(GroundingDinoConfig()).eval(), FeatureCache('off'), names, [1, 2, 3, 4, 5], DinoPreprocess(800, 1333), threshold=0.)
    s = SamTask(build_sam(**SAM_CONFIGS['vit_b']).eval(), FeatureCache('off'))
    def run(files):
        ds = ImageFolder(*find_images(files), [d.pre, s.pre]); b = collate([ds[i] for i in range(len(ds))])
        with torch.no_grad():
            dets = d.predict(d.net, b, 'cpu')
            for i, iid in enumerate(b['image_id']):
                top = sorted((x for x in dets if x['image_id'] == iid), key=lambda x: -x['score'])[:4]
                xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (t['bbox'] for t in top)]).reshape(-1, 4)
                if len(top): sam_masks(s, b, i, sam_frame_boxes(b, i, xyxy), 'cpu')
    return run

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--exp'); p.add_argument('--work', default='/tmp/student_bench'); p.add_argument('--updates', type=int, default=560)
    p.add_argument('--unlabelled', type=int, default=2000); p.add_argument('--subset', type=int, default=500)
    p.add_argument('--speed-images', type=int, default=3, help='images timed for the real-size teacher pipeline (after one warm-up)')
    a = p.parse_args()
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True); t0 = time.time()
    from teacher_lora.evaluate import load_teachers, evaluate
    from teacher_lora.student import pseudo_label, load_student, score_student, export_onnx, check_onnx, images_per_second
    from teacher_lora.runtime import OnnxStudent
    exp = teachers(a, work).resolve(); demo = (exp.parent/'shapes') if (exp.parent/'shapes').is_dir() else work/'teacher_lora_demo'/'shapes'
    sp = demo/'splits'; test = sp/'test.json'; test_files = [demo/'images'/i['file_name'] for i in json.loads(test.read_text())['images']]
    unl = unlabelled(work, a.unlabelled); labels = work/'pseudo'/'labels.json'
    ts = load_teachers(exp, 'cpu')
    t = time.time(); d = pseudo_label(ts, unl, labels, 4, 0, 'cpu'); t_label = time.time() - t
    print(f"pseudo-labels: {len(d['images'])} images, {len(d['annotations'])} objects in {t_label:.0f} s", flush=True)
    ev = evaluate(ts, test, demo/'images', base=False, dev='cpu').stats['tuned']; del ts
    runs = {'student, ground truth only': dict(train=sp/'train.json'),
            f'student, GT + {a.subset} pseudo': dict(train=sp/'train.json', pseudo=subset(labels, a.subset, work/'pseudo'/f'labels_{a.subset}.json')),
            f'student, GT + {a.unlabelled} pseudo': dict(train=sp/'train.json', pseudo=labels)}
    roots = dict(train=demo/'images', pseudo=unl)
    rows = [dict(model='teachers: tuned tiny Grounding DINO → SAM', ap50=ev['dino']['AP50'], ap=ev['dino']['AP'], mask_ap50=ev['grounded']['AP50'], mask_ap=ev['grounded']['AP'])]
    from teacher_lora.train import TrainError
    for i, (name, files) in enumerate(runs.items()):
        try: r = student(f"s{i}", exp, files, {k: roots[k] for k in files}, demo, work, a.updates)
        except TrainError as e:  # e.g. the loss turned NaN: the row says so
            print(f"{name}: {e}", flush=True); rows.append(dict(model=name + ' (diverged: ' + str(e).split('. Training')[0] + ')', ap50=float('nan'), ap=None, mask_ap50=None, mask_ap=None)); continue
        st = load_student(r['folder'], 'cpu'); s = score_student(st, test, demo/'images')
        rows.append(dict(model=name, ap50=s['ap50'], ap=s['ap'], mask_ap50=s.get('mask_ap50'), mask_ap=s.get('mask_ap'), images=f"{r['n_gt']}" + (f" + {r['n_pseudo']} pseudo ({r['n']} per epoch)" if r['n_pseudo'] else ''), epochs=r['epochs']))
    # speed, batch 1, this CPU
    done = [f for f in sorted((work/'students').glob('s*/student')) if (f/'student_card.json').exists()]
    f = max(done, key=lambda f: (json.loads((f/'student_card.json').read_text()).get('metrics') or {}).get('ap50', 0))  # the one a user would deploy
    best = load_student(f, 'cpu'); print(f"speed and ONNX: the student of {f.parent.name} (best validation box AP50)", flush=True)
    onnx = export_onnx(best, work/'student.onnx'); w = check_onnx(best, onnx, test_files)
    ox = OnnxStudent(onnx)
    ips_onnx = images_per_second(lambda fs: [ox.predict(f) for f in fs], test_files, 1, 24)
    ips_torch = images_per_second(best.predict, test_files, 1, 24)
    ips_teacher = images_per_second(real_pipeline(), test_files, 1, a.speed_images)
    print(f"\nbox and mask AP on the test split ({len(test_files)} images), by pycocotools; each student {a.updates} optimiser updates, random init (offline)")
    print(f"| model | training images | box AP50 | box AP | mask AP50 | mask AP |\n|---|---|---|---|---|---|")
    f = lambda v: '' if v is None else f"{v:.3f}"
    for r in rows: print(f"| {r['model']} | {r.get('images', '')} | {f(r['ap50'])} | {f(r['ap'])} | {f(r['mask_ap50'])} | {f(r['mask_ap'])} |")
    print(f"\nimages/s at batch 1 on this CPU ({os.cpu_count()} cores, torch {torch.get_num_threads()} threads)")
    print(f"| pipeline | images/s | vs teachers |\n|---|---|---|")
    for n, v in (('real-size teachers: Grounding DINO-T 800 px → SAM ViT-B (random weights)', ips_teacher), ('student, PyTorch', ips_torch), ('student, onnxruntime', ips_onnx)):
        print(f"| {n} | {v:.2f} | {v / ips_teacher:.1f}x |")
    t_ap50, gt, s500, s2k = rows[0]['ap50'], rows[1]['ap50'], rows[2]['ap50'], rows[3]['ap50']
    print(f"\nONNX = PyTorch on {w['images']} test images ({w['detections']} detections): boxes within {w['box']:.2g} px, scores within {w['score']:.2g}; total {time.time() - t0:.0f} s")
    json.dump(dict(rows=rows, ips=dict(teacher=ips_teacher, torch=ips_torch, onnx=ips_onnx), onnx_check=w), open(work/'results.json', 'w'), indent=1)
    print(f"headline: box AP50 teacher {t_ap50:.3f}, student GT-only {gt:.3f}, GT+{a.subset} pseudo {s500:.3f} ({s500 / t_ap50:.0%} of the teacher), "
          f"GT+{a.unlabelled} pseudo {s2k:.3f} ({s2k / t_ap50:.0%}); ONNX student {ips_onnx:.1f} img/s = {ips_onnx / ips_teacher:.0f}x the real-size teacher pipeline ({ips_teacher:.2f} img/s)")

if __name__ == '__main__': main()
