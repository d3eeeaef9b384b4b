"""Fuzz the four console scripts with broken inputs: mutated COCO files, images, configs, folders, paths and teacher folders.

Each case runs a verb exactly as its console script does (the same argument parser, the same exit code) in one long-lived
worker process, so the 200+ cases pay for importing torch once. Per case the worker captures everything written to the
process's stdout and stderr (file descriptors 1 and 2, so loader workers and C libraries too), the exit code, the wall
time and the peak memory. A case passes when it ends in exit 0, 1 or 2, prints no "internal error" and no traceback, stays
within its time and memory bounds and leaves its inputs byte for byte unchanged. A worker that dies (a crash, the kernel's
out-of-memory killer, a hang past the bound) fails its case, and a new worker goes on with the next one.

    python tests/fuzz.py --root /tmp/fuzz            # all cases; prints the tally, writes /tmp/fuzz/fuzz.log
    python tests/fuzz.py --root /tmp/fuzz --only label

`tests/test_fuzz.py` runs it and checks the tally.
"""
import argparse, contextlib, copy, hashlib, json, math, os, pickle, resource, shutil, signal, struct, subprocess, sys, time, zlib
from pathlib import Path

SETS = ['dino.model=tiny', 'sam.model=tiny', 'preprocess.dino_shortest=96', 'preprocess.dino_longest=128', 'train.epochs=1',
        'train.batch_size=2', 'data.workers=0', 'data.val_fraction=0.25']
TIME = {'validate': 60, 'train': 180, 'evaluate': 120, 'label': 120}   # seconds per case, far above a normal run
MEMORY = 3 << 30    # bytes a case may add to the worker's resident memory
DEL = object()      # "remove this field"


# ---------------------------------------------------------------- the cases
class Case:
    "One run of one verb: `prep(case_dir)` writes its inputs and returns the arguments (after the verb)."
    def __init__(self, name, verb, prep): self.name, self.verb, self.prep = name, verb, prep

def _base(root): return json.loads((root/'base'/'annotations.json').read_text())

def _write_json(path, d, text=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else json.dumps(d))
    return path

def _mutate(d, sect, i, key, value):
    "Set (or delete) one field of one record; `sect` alone replaces a whole section."
    if key is None:
        if value is DEL: d.pop(sect)
        else: d[sect] = value
    elif value is DEL: d[sect][i].pop(key, None)
    else: d[sect][i][key] = value
    return d

FIELDS = [('images', 0, 'id'), ('images', 0, 'file_name'), ('images', 0, 'width'), ('images', 0, 'height'),
          ('annotations', 0, 'id'), ('annotations', 0, 'image_id'), ('annotations', 0, 'category_id'), ('annotations', 0, 'bbox'),
          ('annotations', 0, 'segmentation'), ('annotations', 0, 'area'), ('annotations', 0, 'iscrowd'),
          ('categories', 0, 'id'), ('categories', 0, 'name')]
VALUES = [('del', DEL), ('none', None), ('neg', -1), ('zero', 0), ('huge', 1e300), ('nan', math.nan), ('str', 'x'), ('list', []),
          ('dict', {}), ('nested', [[]]), ('bool', True), ('bigint', 2**70), ('empty', ''), ('pair', [1, 2]), ('deep', [[[[1]]]]),
          ('longstr', 'a' * 10000)]

def _coco_case(sect, i, key, vname, value, verb):
    def prep(root, cd):
        ann = _write_json(cd/'ann.json', _mutate(_base(root), sect, i, key, value if value is DEL else copy.deepcopy(value)))
        return _verb_args(verb, root, cd, ann, root/'base'/'images')
    return Case(f"{sect}.{key}={vname}" if key else f"{sect}={vname}", verb, prep)

def _verb_args(verb, root, cd, ann, images):
    "Arguments that run `verb` on the annotation file `ann` and the image folder `images`."
    if verb == 'validate': return ['--data', ann, '--images', images]
    if verb == 'train': return ['--data', ann, '--images', images, '--output', cd/'out'/'exp', '--set', *SETS]
    if verb == 'evaluate': return ['--exp', root/'exp', '--data', ann, '--images', images, '--out', cd/'out'/'eval']
    if verb == 'label': return ['--exp', root/'exp', '--images', images, '--out', cd/'out'/'labels.json']

def _text_case(name, text, verbs=('validate', 'train', 'evaluate')):
    "Annotation files that are not a COCO object at all."
    def make(verb):
        def prep(root, cd):
            p = cd/'ann.json'; p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(text if isinstance(text, bytes) else text.encode())
            return _verb_args(verb, root, cd, p, root/'base'/'images')
        return Case(f"file:{name}", verb, prep)
    return [make(v) for v in verbs]

def _structure_cases():
    base = '{"images": [], "annotations": [], "categories": []}'
    files = {'empty': '', 'list': '[]', 'string': '"coco"', 'number': '3', 'null': 'null', 'truncated': base[:20],
             'not-json': 'images: [1, 2]', 'bom': '\ufeff' + base, 'latin1': b'{"images": [{"file_name": "caf\xe9.png"}]}',
             'deep': '[' * 100000 + ']' * 100000, 'nul': '{"images": [{"id": 1, "file_name": "a\\u0000b.png", "width": 9, "height": 9}], '
             '"annotations": [], "categories": [{"id": 1, "name": "x"}]}', 'no-objects': base, 'binary': bytes(range(256)) * 4}
    return [c for n, t in files.items() for c in _text_case(n, t)]

def _record_cases(root_dummy=None):
    "Whole-file mistakes: duplicate ids, dangling references, names that escape the image folder, many categories."
    def dup(key):
        def f(d): d[key].append(copy.deepcopy(d[key][0])); return d
        return f
    def cats(n):
        def f(d): d['categories'] += [{'id': 100 + k, 'name': f'class{k}'} for k in range(n)]; return d
        return f
    def same_names(d): d['categories'][1]['name'] = d['categories'][0]['name']; return d
    def emoji(d): d['categories'][0]['name'], d['categories'][1]['name'] = '\U0001F600', '\U0001F601'; return d
    def fname(v):
        def f(d): d['images'][0]['file_name'] = v; return d
        return f
    def mixed_masks(d): d['annotations'][1].pop('segmentation', None); return d
    def crowd_only(d):
        for a in d['annotations']: a['iscrowd'] = 1
        return d
    def no_anns(d): d['annotations'] = []; return d
    def orphan(d): d['annotations'][0]['image_id'] = 999; return d
    def unknown_cat(d): d['annotations'][0]['category_id'] = 999; return d
    def rle_past(d): d['annotations'][0]['segmentation'] = {'size': [240, 320], 'counts': [10**9, 5, 10**9]}; return d
    def rle_neg(d): d['annotations'][0]['segmentation'] = {'size': [240, 320], 'counts': [-5, 10]}; return d
    def rle_size(d): d['annotations'][0]['segmentation'] = {'size': [5, 4], 'counts': [10, 10]}; return d
    def corners(d): a = d['annotations'][0]; x, y, w, h = a['bbox']; a['bbox'] = [x, y, x + w, y + h]; return d
    def box_out(d): d['annotations'][0]['bbox'] = [-500, -500, 10, 10]; return d
    def poly_odd(d): d['annotations'][0]['segmentation'] = [[1, 2, 3]]; return d
    def poly_str(d): d['annotations'][0]['segmentation'] = [['a', 'b', 'c', 'd', 'e', 'f']]; return d
    def sizes_str(d): d['images'][0]['width'] = '320'; return d
    def no_sizes(d):
        for i in d['images']: i.pop('width'); i.pop('height')
        return d
    muts = {'dup-image': dup('images'), 'dup-annotation': dup('annotations'), 'dup-category': dup('categories'),
            'cats-300': cats(300), 'cats-20000': cats(20000), 'same-names': same_names, 'emoji-names': emoji,
            'fname-parent': fname('../base/annotations.json'), 'fname-abs': fname('/etc/passwd'), 'fname-dir': fname('.'),
            'fname-missing': fname('nope.png'), 'fname-5000': fname('x' * 5000 + '.png'), 'fname-nul': fname('a\x00b.png'),
            'fname-url': fname('http://127.0.0.1:9/x.png'), 'mixed-masks': mixed_masks, 'crowd-only': crowd_only,
            'no-annotations': no_anns, 'orphan-annotation': orphan, 'unknown-category': unknown_cat, 'rle-past-image': rle_past,
            'rle-negative': rle_neg, 'rle-wrong-size': rle_size, 'bbox-corners': corners, 'bbox-outside': box_out,
            'poly-odd': poly_odd, 'poly-strings': poly_str, 'width-string': sizes_str, 'no-sizes': no_sizes}
    out = []
    for n, f in muts.items():
        for verb in ('validate', 'train', 'evaluate'):
            def prep(root, cd, f=f, verb=verb):
                return _verb_args(verb, root, cd, _write_json(cd/'ann.json', f(_base(root))), root/'base'/'images')
            out.append(Case(f"records:{n}", verb, prep))
    return out

# ------------------------------------------------ images
def _png_header(w, h):
    "A PNG that declares w x h pixels and holds almost none: what a decompression bomb looks like to a header check."
    def chunk(t, b): return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b))
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')

def _image_cases():
    from PIL import Image
    def edit(f):
        "Apply `f(path, d)` to the first image of a copy of the base dataset."
        def prep_images(root, cd):
            shutil.copytree(root/'base'/'images', cd/'images', symlinks=True); d = _base(root)
            f(cd/'images'/d['images'][0]['file_name'], d); return _write_json(cd/'ann.json', d), cd/'images'
        return prep_images
    def convert(mode, **kw):
        def f(p, d): Image.open(p).convert(mode).save(p, **kw)
        return f
    def sixteen(p, d):
        import numpy as np
        Image.fromarray(np.asarray(Image.open(p).convert('L')).astype(np.uint16) * 257).save(p)
    def resized(p, d): im = Image.open(p); im.resize((im.width // 2, im.height // 2)).save(p)
    def exif(p, d):
        im = Image.open(p); ex = Image.Exif(); ex[0x0112] = 6; im.convert('RGB').save(p.with_suffix('.jpg'), exif=ex); p.unlink()
        d['images'][0]['file_name'] = p.with_suffix('.jpg').name
    def to_dir(p, d): p.unlink(); p.mkdir()
    def dangling(p, d): p.unlink(); p.symlink_to(p.parent/'gone.png')
    def loop(p, d): p.unlink(); p.symlink_to(p.parent/'loop2.png'); (p.parent/'loop2.png').symlink_to(p)
    def outside(p, d):
        o = p.parent.parent/'outside'; o.mkdir(); shutil.move(p, o/p.name); p.symlink_to(o/p.name)
    def jpeg_named_png(p, d): Image.open(p).convert('RGB').save(p, format='JPEG')
    def tiny(p, d): Image.new('RGB', (1, 1)).save(p)
    muts = {'truncated': lambda p, d: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]), 'zero-bytes': lambda p, d: p.write_bytes(b''),
            'text': lambda p, d: p.write_text('not an image'), 'missing': lambda p, d: p.unlink(), 'directory': to_dir,
            'dangling-link': dangling, 'link-loop': loop, 'link-outside-root': outside, 'grey': convert('L'), 'rgba': convert('RGBA'),
            'palette': convert('P'), 'cmyk-jpeg': convert('CMYK', format='JPEG'), 'sixteen-bit': sixteen, 'resized': resized,
            'exif-rotated': exif, 'jpeg-named-png': jpeg_named_png, '1x1': tiny, 'bomb-30000': lambda p, d: p.write_bytes(_png_header(30000, 30000)),
            'bomb-12000': lambda p, d: p.write_bytes(_png_header(12000, 12000))}
    out = []
    for n, f in muts.items():
        for verb in ('validate', 'train', 'label'):
            def prep(root, cd, f=f, verb=verb):
                ann, images = edit(f)(root, cd); return _verb_args(verb, root, cd, ann, images)
            out.append(Case(f"image:{n}", verb, prep))
    return out

# ------------------------------------------------ configs
def _config_cases():
    sets = ['train.lr=nan', 'train.lr=-1', 'train.lr=abc', 'train.batch_size=0', 'train.batch_size=-1', 'train.batch_size=1.5',
            'train.epochs=-3', 'train.epochs=0', 'train.epochs=1e9', 'data.val_fraction=0', 'data.val_fraction=1', 'data.val_fraction=2',
            'data.workers=-1', 'sam.lora_r=0', 'sam.lora_r=-4', 'sam.checkpoint=[1,2]', 'sam.checkpoint=', 'train.mixed_precision=no',
            'train.mixed_precision=maybe', 'train=5', 'nokey=1', 'train.nokey=1', 'train.lr', '=1', 'train.lr=!!python/object/apply:os.system [ls]',
            'train.lr=[', 'train.lr={a: 1}', 'train.cache=sometimes', 'train.cache_memory=200%', 'train.cache_memory=-1',
            'preprocess.dino_shortest=0', 'preprocess.dino_shortest=-5', 'preprocess.dino_shortest=64', 'preprocess.dino_longest=1e12', 'sam.max_prompts=0',
            'label.precision=2', 'dino.lora_r=1e9', 'data.augment=perhaps', 'train.lr=' + 'a' * 100000]
    configs = {'list': '[1, 2]', 'string': 'hello', 'number': '3', 'empty': '', 'binary': b'\x00\xff\xfe' * 100,
               'tag': 'train: !!python/object/apply:os.system [ls]', 'unknown-key': 'trian: {lr: 1}', 'wrong-type': 'train: 5',
               'bad-yaml': 'train: {lr: [', 'anchors': 'a: &a [x,x,x,x,x,x,x,x,x]\n' + ''.join(
                   f"{chr(98+k)}: &{chr(98+k)} [*{chr(97+k)},*{chr(97+k)},*{chr(97+k)},*{chr(97+k)},*{chr(97+k)},*{chr(97+k)},*{chr(97+k)},*{chr(97+k)},*{chr(97+k)}]\n" for k in range(8)),
               'deep': '[' * 50000 + ']' * 50000, 'huge-value': 'train: {lr: "' + 'x' * 1000000 + '"}', 'nan-lr': 'train: {lr: .nan}'}
    out = []
    for s in sets:
        def prep(root, cd, s=s): return ['--data', root/'base'/'annotations.json', '--images', root/'base'/'images', '--output', cd/'out'/'exp', '--set', *SETS, s]
        out.append(Case(f"set:{s[:40]}", 'train', prep))
    for n, t in configs.items():
        def prep(root, cd, t=t):
            p = cd/'config.yaml'; p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(t if isinstance(t, bytes) else t.encode())
            return ['--data', root/'base'/'annotations.json', '--images', root/'base'/'images', '--output', cd/'out'/'exp', '--config', p, '--set', *SETS]
        out.append(Case(f"config:{n}", 'train', prep))
    return out

# ------------------------------------------------ folders and paths
def _path_cases():
    def file_at(cd, name='afile'): cd.mkdir(parents=True, exist_ok=True); p = cd/name; p.write_text('keep me'); return p
    B = lambda root: (root/'base'/'annotations.json', root/'base'/'images')
    def v(args): return lambda root, cd: args(root, cd)
    cases = {
        'validate': {
            'data-missing': lambda r, cd: ['--data', cd/'nope.json'], 'data-dir': lambda r, cd: ['--data', r/'base'],
            'data-devnull': lambda r, cd: ['--data', '/dev/null'], 'images-missing': lambda r, cd: ['--data', B(r)[0], '--images', cd/'nope'],
            'images-file': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[0]],
            'fix-dir': lambda r, cd: ['--data', B(r)[0], '--fix', r/'base'], 'fix-under-file': lambda r, cd: ['--data', B(r)[0], '--fix', file_at(cd)/'x.json'],
            'fix-proc': lambda r, cd: ['--data', B(r)[0], '--fix', '/proc/fuzz.json'], 'fix-is-input': lambda r, cd: ['--data', B(r)[0], '--fix', B(r)[0]],
            'split-under-file': lambda r, cd: ['--data', B(r)[0], '--split', 'train:0.5,val:0.5', '--out', file_at(cd)],
            'split-bad-spec': lambda r, cd: ['--data', B(r)[0], '--split', 'train:2,val:-1', '--out', cd/'out'],
            'split-nan': lambda r, cd: ['--data', B(r)[0], '--split', 'train:nan,val:0.5', '--out', cd/'out'],
            'no-args': lambda r, cd: [], 'unknown-flag': lambda r, cd: ['--data', B(r)[0], '--frobnicate'],
        },
        'train': {
            'output-file': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--output', file_at(cd), '--set', *SETS],
            'output-under-file': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--output', file_at(cd)/'exp', '--set', *SETS],
            'output-proc': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--output', '/proc/fuzz-exp', '--set', *SETS],
            'output-exists': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--output', r/'exp', '--set', *SETS],
            'resume-nothing': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--output', cd/'out'/'new', '--resume', '--set', *SETS],
            'images-file': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[0], '--output', cd/'out'/'exp', '--set', *SETS],
            'images-missing': lambda r, cd: ['--data', B(r)[0], '--images', cd/'nope', '--output', cd/'out'/'exp', '--set', *SETS],
            'data-dir': lambda r, cd: ['--data', r/'base', '--images', B(r)[1], '--output', cd/'out'/'exp', '--set', *SETS],
            'val-missing': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--val', cd/'nope.json', '--output', cd/'out'/'exp', '--set', *SETS],
            'only-bogus': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--only', 'yolo', '--output', cd/'out'/'exp', '--set', *SETS],
            'dino-missing-folder': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--dino', cd/'nope', '--output', cd/'out'/'exp', '--set', *SETS],
            'sam-bad-spec': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--sam', 'vit_q:auto', '--output', cd/'out'/'exp', '--set', *SETS],
            'sam-missing-pth': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--sam', f"vit_b:{cd/'nope.pth'}", '--output', cd/'out'/'exp', '--set', *SETS],
            'epochs-neg': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--epochs', '-2', '--output', cd/'out'/'exp', '--set', *SETS],
            'device-bogus': lambda r, cd: ['--data', B(r)[0], '--images', B(r)[1], '--device', 'tpu9', '--output', cd/'out'/'exp', '--set', *SETS],
            'missing-args': lambda r, cd: ['--data', B(r)[0]],
        },
        'evaluate': {
            'exp-missing': lambda r, cd: ['--exp', cd/'nope', '--data', B(r)[0], '--images', B(r)[1], '--out', cd/'out'/'e'],
            'exp-empty': lambda r, cd: ['--exp', (cd/'empty').mkdir(parents=True) or cd/'empty', '--data', B(r)[0], '--images', B(r)[1], '--out', cd/'out'/'e'],
            'exp-file': lambda r, cd: ['--exp', file_at(cd), '--data', B(r)[0], '--images', B(r)[1], '--out', cd/'out'/'e'],
            'out-file': lambda r, cd: ['--exp', r/'exp', '--data', B(r)[0], '--images', B(r)[1], '--out', file_at(cd)],
            'out-under-file': lambda r, cd: ['--exp', r/'exp', '--data', B(r)[0], '--images', B(r)[1], '--out', file_at(cd)/'e'],
            'data-missing': lambda r, cd: ['--exp', r/'exp', '--data', cd/'nope.json', '--images', B(r)[1], '--out', cd/'out'/'e'],
            'images-missing': lambda r, cd: ['--exp', r/'exp', '--data', B(r)[0], '--images', cd/'nope', '--out', cd/'out'/'e'],
            'batch-zero': lambda r, cd: ['--exp', r/'exp', '--data', B(r)[0], '--images', B(r)[1], '--out', cd/'out'/'e', '--batch_size', '0'],
            'batch-neg': lambda r, cd: ['--exp', r/'exp', '--data', B(r)[0], '--images', B(r)[1], '--out', cd/'out'/'e', '--batch_size', '-3'],
            'no-data': lambda r, cd: ['--exp', r/'exp'],
        },
        'label': {
            'images-missing': lambda r, cd: ['--exp', r/'exp', '--images', cd/'nope', '--out', cd/'out'/'l.json'],
            'images-file': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[0], '--out', cd/'out'/'l.json'],
            'images-empty': lambda r, cd: ['--exp', r/'exp', '--images', (cd/'none').mkdir(parents=True) or cd/'none', '--out', cd/'out'/'l.json'],
            'images-no-images': lambda r, cd: ['--exp', r/'exp', '--images', file_at(cd, 'notes.txt').parent, '--out', cd/'out'/'l.json'],
            'out-dir': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', r/'base'],
            'out-under-file': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', file_at(cd)/'l.json'],
            'out-foreign': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', B(r)[0]],
            'out-proc': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', '/proc/fuzz.json'],
            'threshold-nan': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', cd/'out'/'l.json', '--threshold', 'nan'],
            'threshold-neg': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', cd/'out'/'l.json', '--threshold', '-5'],
            'threshold-word': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', cd/'out'/'l.json', '--threshold', 'high'],
            'batch-zero': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', cd/'out'/'l.json', '--batch_size', '0'],
            'workers-neg': lambda r, cd: ['--exp', r/'exp', '--images', B(r)[1], '--out', cd/'out'/'l.json', '--workers', '-1'],
            'exp-missing': lambda r, cd: ['--exp', cd/'nope', '--images', B(r)[1], '--out', cd/'out'/'l.json'],
        },
    }
    return [Case(f"path:{n}", verb, f) for verb, d in cases.items() for n, f in d.items()]

# ------------------------------------------------ teacher folders and results files
def _teacher_cases():
    def card(teacher, f):
        def g(exp):
            p = exp/teacher/'teacher'/'teacher_card.json'; c = json.loads(p.read_text()); f(c); p.write_text(json.dumps(c))
        return g
    def put(rel, data):
        def g(exp):
            p = exp/rel; p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(data)
        return g
    def rm(rel): return lambda exp: (exp/rel).unlink()
    def trunc(rel): return lambda exp: (exp/rel).write_bytes((exp/rel).read_bytes()[:100])
    def base(k, v):
        def f(c): c.setdefault('base', {})[k] = v
        return f
    def sam_huge(c): c.setdefault('base', {})['config'] = {'embed_dim': 8192, 'depth': 64, 'num_heads': 64}
    muts = {'card-missing': rm('dino/teacher/teacher_card.json'), 'card-truncated': trunc('dino/teacher/teacher_card.json'),
            'card-list': put('sam/teacher/teacher_card.json', b'[]'), 'adapter-truncated': trunc('dino/teacher/adapter_model.safetensors'),
            'adapter-missing': rm('sam/teacher/adapter_model.safetensors'), 'adapter-config-bad': put('dino/teacher/adapter_config.json', b'{"r": "x"}'),
            'adapter-pickle': lambda exp: (rm('dino/teacher/adapter_model.safetensors')(exp), put('dino/teacher/adapter_model.bin', pickle.dumps({'a': [1]}))(exp)),
            'dino-evil-repo': card('dino', base('id', 'attacker/evil-repo')), 'sam-huge': card('sam', sam_huge),
            'config-garbage': put('config.yaml', b'train: [\n'), 'config-missing': rm('config.yaml'),
            'adapter-wrong-shapes': lambda exp: shutil.copy(exp/'sam'/'teacher'/'adapter_model.safetensors', exp/'dino'/'teacher'/'adapter_model.safetensors'),
            'names-changed': card('dino', lambda c: c.update(names=['x'])), 'thresholds-garbage': card('dino', lambda c: c.update(thresholds='lots'))}
    out = []
    for n, f in muts.items():
        for verb in ('evaluate', 'label'):
            def prep(root, cd, f=f, verb=verb):
                shutil.copytree(root/'exp', cd/'exp'); f(cd/'exp')
                a = _verb_args(verb, root, cd, root/'base'/'annotations.json', root/'base'/'images')
                return [cd/'exp' if x == root/'exp' else x for x in a]
            out.append(Case(f"teacher:{n}", verb, prep))
    def resume(f):
        def prep(root, cd):
            shutil.copytree(root/'exp', cd/'exp'); f(cd/'exp')
            return ['--data', root/'base'/'annotations.json', '--images', root/'base'/'images', '--output', cd/'exp', '--resume', '--set', *SETS, 'train.epochs=2']
        return prep
    step = 'dino/checkpoints/update-0000001'
    for n, f in {'state-pickle': put(f'{step}/state.pt', pickle.dumps(lambda: 0) if False else b'\x80\x04K\x01.'),
                 'state-truncated': trunc(f'{step}/state.pt'), 'rng-garbage': put(f'{step}/rng-0.pt', b'garbage'),
                 'adapter-truncated': trunc(f'{step}/adapter.safetensors'), 'config-edited': put('config.yaml', b'train: {lr: 5}\n')}.items():
        out.append(Case(f"resume:{n}", 'train', resume(f)))
    return out

def _results_cases():
    def res(text):
        def prep(root, cd):
            p = cd/'res.json'; p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text if isinstance(text, str) else json.dumps(text))
            return ['--results', p, '--data', root/'base'/'annotations.json']
        return prep
    good = {'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 20, 20], 'score': .9}
    variants = {'empty-list': [], 'dict': {}, 'string': 'x', 'junk-records': [1, 2], 'empty-record': [{}], 'nan-box': [dict(good, bbox=[math.nan] * 4)],
                'neg-box': [dict(good, bbox=[-5, -5, -1, 3])], 'score-str': [dict(good, score='high')], 'unknown-image': [dict(good, image_id=99)],
                'unknown-cat': [dict(good, category_id=99)], 'bad-rle': [dict(good, segmentation={'size': [1, 1], 'counts': 'zz'})], 'not-json': '[{'}
    return [Case(f"results:{n}", 'evaluate', res(v)) for n, v in variants.items()]

def all_cases():
    cases = [_coco_case(s, i, k, vn, v, 'validate') for s, i, k in FIELDS for vn, v in VALUES]
    cases += [_coco_case(s, None, None, vn, v, 'validate') for s in ('images', 'annotations', 'categories')
              for vn, v in [('del', DEL), ('none', None), ('dict', {}), ('str', 'x'), ('nones', [None]), ('ints', [1])]]
    # training and evaluation on a sample of the same mutations: every verb reads annotation files through the same code
    cases += [_coco_case(s, i, k, vn, v, verb) for verb, every in (('train', 4), ('evaluate', 5)) for j, ((s, i, k), (vn, v))
              in enumerate((f, x) for f in FIELDS for x in VALUES) if j % every == (0 if verb == 'train' else 2)]
    cases += _structure_cases() + _record_cases() + _image_cases() + _config_cases() + _path_cases() + _teacher_cases() + _results_cases()
    return cases


# ---------------------------------------------------------------- running them
VERBS = {'validate': 'validate_cli', 'train': 'train_cli', 'evaluate': 'evaluate_cli', 'label': 'label_cli'}

def _tree_hash(path, skip=None)->dict:
    "sha256 of every file (and the target of every link) under `path`, except under `skip`."
    out = {}
    for p in sorted(Path(path).rglob('*')) if Path(path).is_dir() else [Path(path)]:
        if skip and (p == skip or skip in p.parents): continue
        if p.is_symlink(): out[str(p)] = 'link:' + os.readlink(p)
        elif p.is_file():
            try: out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as e: out[str(p)] = f'unreadable: {e.strerror}'
        elif p.is_dir(): out[str(p)] = 'dir'
    return out

@contextlib.contextmanager
def _captured(path):
    "Send file descriptors 1 and 2 (this process, its children and C code) to `path`."
    sys.stdout.flush(); sys.stderr.flush(); saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.dup2(fd, 1); os.dup2(fd, 2); os.close(fd)
    try: yield
    finally:
        sys.stdout.flush(); sys.stderr.flush(); os.dup2(saved[0], 1); os.dup2(saved[1], 2); os.close(saved[0]); os.close(saved[1])

def _peak_rss()->int:
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) << 10

def _reset_peak():
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')

class CaseTimeout(BaseException): "Raised by the alarm: not an Exception, so the command's own handlers cannot swallow it."

def _call(verb, args)->int:
    "Run `teacher-lora-<verb> args` as its console script does; return its exit code."
    from fastcore.script import _run_cli
    from teacher_lora import cli
    sys.argv = [f'teacher-lora-{verb}', *map(str, args)]
    try: _run_cli(getattr(cli, VERBS[verb]).__wrapped__, False); return 0
    except SystemExit as e: return e.code if isinstance(e.code, int) else 0 if e.code is None else 1

def _fixtures(root):
    "The base dataset (4 images, boxes and masks) and a tiny experiment trained on it, made once."
    if (root/'exp'/'sam'/'teacher'/'teacher_card.json').exists(): return
    from teacher_lora.test_utils import shapes_dataset
    shutil.rmtree(root/'base', ignore_errors=True); shutil.rmtree(root/'exp', ignore_errors=True)
    shapes_dataset(root/'base', 4, seed=3, background='plain', scale=(.3, .55))
    with _captured(root/'fixture.log'):
        rc = _call('train', ['--data', root/'base'/'annotations.json', '--images', root/'base'/'images', '--output', root/'exp', '--set', *SETS])
    if rc != 0: sys.exit(f"fuzz: training the fixture experiment failed (exit {rc}); see {root/'fixture.log'}")

def worker(root, start, only):
    "Run the cases from index `start`, one JSON line each in results.jsonl."
    os.environ.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TEACHER_LORA_SAM_URL='http://127.0.0.1:9/', OMP_NUM_THREADS='1')
    import torch; torch.set_num_threads(1)
    _fixtures(root)
    fixed = {**_tree_hash(root/'base'), **_tree_hash(root/'exp')}
    cases = all_cases()
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(CaseTimeout()))
    with open(root/'results.jsonl', 'a') as res:
        for k in range(start, len(cases)):
            c = cases[k]
            if only and c.verb not in only: continue
            cd = root/'cases'/f'{k:03d}'; shutil.rmtree(cd, ignore_errors=True); cd.mkdir(parents=True)
            (cd/'out').mkdir()
            r = dict(k=k, name=c.name, verb=c.verb)
            try:
                args = c.prep(root, cd); before = _tree_hash(cd, skip=cd/'out')
                os.chdir(cd/'out'); _reset_peak(); rss0, t0 = _peak_rss(), time.time()
                signal.alarm(TIME[c.verb])
                try:
                    with _captured(cd/'out'/'output.txt'): r['rc'] = _call(c.verb, args)
                except CaseTimeout: r['rc'], r['timeout'] = None, True
                finally: signal.alarm(0)
                r.update(seconds=round(time.time() - t0, 2), memory=_peak_rss() - rss0, args=[str(a) for a in args])
                os.chdir(root)
                r['changed'] = sorted(k2 for k2, v in _tree_hash(cd, skip=cd/'out').items() if before.get(k2) != v)
            except Exception as e:  # a broken case builder is the fuzzer's bug, not the product's: say so and go on
                os.chdir(root); r.update(rc=None, setup_error=f"{type(e).__name__}: {e}")
            r['output'] = (cd/'out'/'output.txt').read_text(errors='replace')[-20000:] if (cd/'out'/'output.txt').exists() else ''
            res.write(json.dumps(r) + '\n'); res.flush()
    after = {**_tree_hash(root/'base'), **_tree_hash(root/'exp')}
    (root/'fixtures_changed.json').write_text(json.dumps(sorted(p for p in set(fixed) | set(after) if fixed.get(p) != after.get(p))))

def verdict(r)->str:
    "Why a case failed, or '' when it passed."
    if r.get('setup_error'): return 'fuzzer: ' + r['setup_error']
    if r.get('timeout'): return f"no exit within {TIME[r['verb']]} s"
    if r.get('died'): return f"worker died ({r['died']})"
    if r['rc'] not in (0, 1, 2): return f"exit {r['rc']}"
    if 'internal error' in r['output']: return 'internal error'
    if 'Traceback' in r['output']: return 'traceback'
    if r.get('memory', 0) > MEMORY: return f"used {r['memory'] / 2**30:.1f} GiB"
    if r.get('changed'): return f"changed its inputs: {r['changed'][:3]}"
    return ''

def driver(root, only):
    "Run workers until every case has a result; print the tally; return the number of failed cases."
    root.mkdir(parents=True, exist_ok=True); (root/'results.jsonl').unlink(missing_ok=True)
    n, start = len(all_cases()), 0
    while True:
        p = subprocess.run([sys.executable, __file__, '--worker', '--root', str(root), '--start', str(start), *(['--only', *only] if only else [])])
        done = [json.loads(l) for l in open(root/'results.jsonl')] if (root/'results.jsonl').exists() else []
        last = done[-1]['k'] if done else -1
        if p.returncode == 0: break
        if p.returncode > 0 and not done and start == 0: return 1  # the fixtures could not be made
        nxt = next((k for k in range(last + 1, n) if not only or all_cases()[k].verb in only), None)
        if nxt is None: break
        c = all_cases()[nxt]
        with open(root/'results.jsonl', 'a') as f:
            f.write(json.dumps(dict(k=nxt, name=c.name, verb=c.verb, rc=None, died=f'exit {p.returncode}', output='', memory=0, changed=[])) + '\n')
        start = nxt + 1
    return report(root)

def report(root)->int:
    rs = [json.loads(l) for l in open(root/'results.jsonl')]
    with open(root/'fuzz.log', 'w') as f:
        for r in rs: f.write(f"=== case {r['k']:03d} {r['verb']} {r['name']} exit {r['rc']} ({r.get('seconds', '?')} s)\n{' '.join(r.get('args', []))}\n{r['output']}\n")
    bad = [(r, v) for r in rs if (v := verdict(r))]
    fixed = json.loads((root/'fixtures_changed.json').read_text()) if (root/'fixtures_changed.json').exists() else []
    print(f"\n{'verb':<10}{'cases':>6}{'exit 0':>8}{'exit 1':>8}{'exit 2':>8}{'failed':>8}{'max s':>8}{'max MiB':>9}")
    for verb in VERBS:
        v = [r for r in rs if r['verb'] == verb]
        if not v: continue
        cnt = lambda c: sum(r['rc'] == c for r in v)
        print(f"{verb:<10}{len(v):>6}{cnt(0):>8}{cnt(1):>8}{cnt(2):>8}{sum(1 for r, _ in bad if r['verb'] == verb):>8}"
              f"{max(r.get('seconds', 0) for r in v):>8.1f}{max(r.get('memory', 0) for r in v) / 2**20:>9.0f}")
    for r, why in bad: print(f"FAILED case {r['k']:03d} {r['verb']} {r['name']}: {why}\n    {r['output'].strip().splitlines()[-1][:300] if r['output'].strip() else ''}")
    if fixed: print(f"FAILED: the shared fixtures changed: {fixed[:5]}")
    n_int = sum('internal error' in r['output'] for r in rs)
    print(f"fuzz: {len(rs)} broken inputs, {len(rs) - len(bad)} handled, {len(bad)} failed, {n_int} 'internal error'; log {root/'fuzz.log'}")
    return len(bad) + bool(fixed)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--root', type=Path, required=True); ap.add_argument('--only', nargs='*')
    ap.add_argument('--worker', action='store_true'); ap.add_argument('--start', type=int, default=0)
    a = ap.parse_args()
    if a.worker:
        resource.setrlimit(resource.RLIMIT_AS, (24 << 30, 24 << 30))
        worker(a.root.resolve(), a.start, a.only)
    else: sys.exit(1 if driver(a.root.resolve(), a.only) else 0)
