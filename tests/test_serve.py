"The HTTP server as clients use it: every endpoint, every refused request (then a good one), results equal to `label_images`, the console script."
import io, json, os, socket, struct, subprocess, sys, threading, time, zlib
from pathlib import Path
import httpx, pytest
from PIL import Image
from fastapi.testclient import TestClient
from teacher_lora.evaluate import load_teachers
from teacher_lora.predict import label_images
from teacher_lora.serve import STUDENT_THRESHOLD, StudentModel, Teachers, make_app
from teacher_lora.student import load_student, make_student, save_student, student_card

BIN = Path(sys.executable).parent
@pytest.fixture(scope='module')
def student(exp, tmp_path_factory):
    "A small Mask R-CNN student of the experiment's classes, untrained (random weights, seeded): a second model to serve, built in a second."
    import torch
    ts = load_teachers(exp[0]); torch.manual_seed(0)
    names, ids = ts['dino'].names, ts['dino'].cat_ids
    return save_student(make_student(len(names), masks=True, input_size=128).eval(), tmp_path_factory.mktemp('student')/'student', student_card(names, ids, True, 128, 'random'))

@pytest.fixture(scope='module')
def served(exp, student):
    ts = load_teachers(exp[0])
    models = dict(teachers=Teachers(ts), student=StudentModel(load_student(student)))
    with TestClient(make_app(models, max_upload_mb=1, max_pixels=4_000_000)) as c: yield c, ts

def png(im)->bytes: b = io.BytesIO(); im.save(b, 'PNG'); return b.getvalue()

def huge_png(w, h)->bytes:
    "A tiny PNG whose header claims w x h pixels."
    b = bytearray(png(Image.new('L', (1, 1)))); ihdr = struct.pack('>II', w, h) + bytes(b[24:29])
    b[16:29] = ihdr; b[29:33] = struct.pack('>I', zlib.crc32(b'IHDR' + ihdr)); return bytes(b)

def post(c, data:bytes, name='a.png', **params): return c.post('/predict', params=params, files=dict(file=(name, data)))
def strip(anns): return [{k: v for k, v in a.items() if k != 'category_name'} for a in anns]

def test_endpoints(served, exp):
    c, ts = served
    assert c.get('/health').json() == dict(status='ok', models=['teachers', 'student'])
    info = c.get('/info').json()
    assert [x['name'] for x in info['classes']] == ts['dino'].names and [x['id'] for x in info['classes']] == ts['dino'].cat_ids
    m = info['models']['teachers']
    assert m['masks'] and set(m['teachers']) == {'dino', 'sam'} and m['thresholds'] == {n: .3 for n in ts['dino'].names}
    assert {'teacher_lora', 'torch', 'transformers', 'fastapi'} <= set(info['versions'])
    assert info['limits'] == dict(max_upload_mb=1, max_pixels=4_000_000, max_batch=8, max_wait_ms=5., workers=1)
    s = info['models']['student']
    assert s['kind'] == 'student' and s['masks'] and s['categories'] == info['classes'] and s['thresholds'] == {n: STUDENT_THRESHOLD for n in ts['dino'].names}
    page = c.get('/')
    assert page.status_code == 200 and page.headers['content-type'].startswith('text/html') and 'id="threshold"' in page.text
    assert c.get('/docs').status_code == 200 and '/predict' in c.get('/openapi.json').json()['paths']
    r = post(c, (exp[1]/'00001.png').read_bytes())
    assert r.status_code == 200
    j = r.json()
    w, h = Image.open(exp[1]/'00001.png').size
    assert (j['width'], j['height'], j['model']) == (w, h, 'teachers') and j['thresholds'] == m['thresholds']
    names = {x['id']: x['name'] for x in info['classes']}
    assert all(a['category_name'] == names[a['category_id']] and a['score'] >= .3 and a['segmentation']['size'] == [h, w] for a in j['annotations'])
    only = post(c, (exp[1]/'00001.png').read_bytes(), threshold=.05, classes='circle').json()
    assert only['annotations'] and {a['category_name'] for a in only['annotations']} == {'circle'} and only['thresholds'] == {'circle': .05}

def chunks(n):  # a body without Content-Length: counted as it streams in
    for _ in range(n): yield bytes(2**16)

BAD = {  # name -> (request keyword arguments, expected status, a word of the message)
    'not an image': (dict(files=dict(file=('x.png', b'GIF89a? no, just text'))), 415, 'not an image'),
    'empty file': (dict(files=dict(file=('x.png', b''))), 415, 'not an image'),
    'truncated': (dict(files=dict(file=('x.png', 'TRUNC'))), 400, 'truncated'),
    'bomb, over Pillow\'s own limit': (dict(files=dict(file=('x.png', huge_png(40_000, 40_000)))), 413, 'too large'),
    'bomb, over the server\'s limit': (dict(files=dict(file=('x.png', huge_png(3000, 3000)))), 413, '4,000,000 pixels'),
    'over the upload limit': (dict(files=dict(file=('x.png', bytes(2 * 2**20)))), 413, 'upload limit'),
    'streamed over the upload limit': (dict(content=chunks(40), headers={'content-type': 'multipart/form-data; boundary=x'}), 413, 'upload limit'),
    'no file': (dict(data=dict(other='1')), 422, 'file'),
    'unknown model': (dict(files=dict(file=('x.png', 'GOOD')), params=dict(model='teacher')), 422, 'unknown model'),
    'unknown class': (dict(files=dict(file=('x.png', 'GOOD')), params=dict(classes='circle,unicorn')), 422, 'unicorn'),
    'threshold above 1': (dict(files=dict(file=('x.png', 'GOOD')), params=dict(threshold=1.01)), 422, 'threshold'),
    'threshold below 0': (dict(files=dict(file=('x.png', 'GOOD')), params=dict(threshold=-.1)), 422, 'threshold'),
    'threshold nan': (dict(files=dict(file=('x.png', 'GOOD')), params=dict(threshold='nan')), 422, 'threshold'),
    'threshold not a number': (dict(files=dict(file=('x.png', 'GOOD')), params=dict(threshold='high')), 422, 'threshold'),
}

@pytest.mark.parametrize('case', list(BAD))
def test_bad_request_then_good(served, exp, case):
    "Each bad request gets its 4xx and a JSON message; the next good request is answered."
    c, _ = served
    good = (exp[1]/'00002.png').read_bytes()
    kw, status, word = BAD[case]
    if 'files' in kw:
        f = kw['files']['file']
        kw = dict(kw, files=dict(file=(f[0], good if f[1] == 'GOOD' else good[:len(good) // 3] if f[1] == 'TRUNC' else f[1])))
    r = c.post('/predict', **kw)
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()['detail']
    assert word in (detail if isinstance(detail, str) else json.dumps(detail)), detail
    ok = post(c, good)
    assert ok.status_code == 200 and ok.json()['width'] == 288

def test_results_equal_label_images(served, exp, tmp_path):
    "For each image, /predict gives the annotations `label_images` writes for the file: at the default thresholds and at one given."
    c, ts = served
    files = sorted(exp[1].iterdir())
    for th in (None, .05):
        lab = label_images(ts, exp[1], tmp_path/f'labels-{th}.json', batch_size=1, workers=0, progress=False,
                           thresholds=None if th is None else {n: th for n in ts['dino'].names})
        by_name = {i['file_name']: [{k: v for k, v in a.items() if k not in ('id', 'image_id')} for a in lab['annotations'] if a['image_id'] == i['id']]
                   for i in lab['images']}
        got = {f.name: strip(post(c, f.read_bytes(), f.name, **({} if th is None else dict(threshold=th))).json()['annotations']) for f in files}
        assert got == by_name
    assert sum(len(v) for v in got.values()) > 10

def test_student_results_equal_student_predict(served, exp, student):
    "With model=student, /predict gives what `Student.predict` gives for the file: at the student's default threshold, at one given, for some classes."
    c, ts = served
    st = load_student(student)
    for th in (None, .05):
        for f in sorted(exp[1].iterdir()):
            r = post(c, f.read_bytes(), f.name, model='student', **({} if th is None else dict(threshold=th)))
            assert r.status_code == 200 and r.json()['model'] == 'student'
            assert strip(r.json()['annotations']) == st.predict([f], STUDENT_THRESHOLD if th is None else th)[0]
    got = post(c, f.read_bytes(), model='student', threshold=0, classes='circle').json()['annotations']
    want = [a for a in st.predict([f])[0] if a['category_id'] == ts['dino'].cat_ids[ts['dino'].names.index('circle')]]
    assert want and strip(got) == want and all(a['segmentation']['size'] == [r.json()['height'], r.json()['width']] for a in got)

def test_concurrent_requests_share_model_calls(served, exp):
    "Requests sent together are batched (fewer model calls than requests) and each gets its own image's result."
    c, _ = served
    f = exp[1]/'00001.png'; data = f.read_bytes()
    alone = strip(post(c, data, threshold=.05).json()['annotations'])
    def batches(): return {int(k): v for k, v in c.get('/info').json()['batches']['teachers'].items()}  # size -> how many ran
    b0 = batches(); images0, calls0 = sum(k * v for k, v in b0.items()), sum(b0.values())
    out = [None] * 8
    def one(i): out[i] = post(c, data, threshold=.05)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    b = batches()
    assert sum(k * v for k, v in b.items()) - images0 == 8 and sum(b.values()) - calls0 < 8, b
    for r in out:
        assert r.status_code == 200
        got = strip(r.json()['annotations'])
        assert [a['category_id'] for a in got] == [a['category_id'] for a in alone]
        assert all(abs(a['score'] - b['score']) < 1e-4 for a, b in zip(got, alone))

def test_two_workers(exp, student):
    "With two workers, two batches run at once on replicas of each model: concurrent requests to both models get their own image's results."
    files = sorted(exp[1].iterdir())
    models = dict(teachers=Teachers(load_teachers(exp[0])), student=StudentModel(load_student(student)))
    with TestClient(make_app(models, max_batch=2, max_wait_ms=20, workers=2)) as c:
        assert c.get('/info').json()['limits']['workers'] == 2
        jobs = [(f, m) for f in files for m in ('teachers', 'student')] * 3
        alone = {(f, m): strip(post(c, f.read_bytes(), model=m, threshold=.05).json()['annotations']) for f, m in jobs}
        out = [None] * len(jobs)
        def one(i): out[i] = post(c, jobs[i][0].read_bytes(), model=jobs[i][1], threshold=.05)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
        for t in ts: t.start()
        for t in ts: t.join()
        batches = c.get('/info').json()['batches']
    assert sum(int(k) * v for b in batches.values() for k, v in b.items()) == 2 * len(jobs), batches  # each request once, alone and together
    for (f, m), r in zip(jobs, out):
        assert r.status_code == 200
        got, want = strip(r.json()['annotations']), alone[f, m]
        assert [a['category_id'] for a in got] == [a['category_id'] for a in want], (f.name, m)
        assert all(abs(a['score'] - b['score']) < 1e-4 and max(abs(x - y) for x, y in zip(a['bbox'], b['bbox'])) < 1e-2 for a, b in zip(got, want)), (f.name, m)

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def serve_script(tmp_path)->Path:
    "The installed `teacher-lora-serve`, or, where the package was installed before it existed, the same wrapper pip writes."
    if (BIN/'teacher-lora-serve').exists(): return BIN/'teacher-lora-serve'
    p = tmp_path/'teacher-lora-serve'
    p.write_text(f"#!{sys.executable}\nimport sys\nfrom teacher_lora.serve import serve_cli\nif __name__ == '__main__': sys.exit(serve_cli())\n"); p.chmod(0o755)
    return p

def test_console_script_answers_health(exp, student, tmp_path):
    "`teacher-lora-serve` as a subprocess on a free port, with a student and two workers: /health answers; it stops on SIGTERM with requests in flight; a missing --exp exits 2."
    script, port = serve_script(tmp_path), free_port()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    r = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and '--exp is required' in r.stderr
    r = subprocess.run([str(script), '--exp', str(exp[0]), '--student', str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and 'no student in it' in r.stderr, r.stderr
    p = subprocess.Popen([str(script), '--exp', str(exp[0]), '--student', str(student), '--workers', '2', '--port', str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            try: h = httpx.get(f'{url}/health', timeout=1); break
            except httpx.TransportError:
                assert p.poll() is None, p.communicate()
                time.sleep(.5)
        assert h.json() == dict(status='ok', models=['teachers', 'student'])
        assert httpx.get(f'{url}/info').json()['limits']['workers'] == 2
        r = httpx.post(f'{url}/predict', files=dict(file=('x.png', b'nope')), timeout=60)
        assert r.status_code == 415 and 'not an image' in r.json()['detail']
        data = (exp[1]/'00001.png').read_bytes()
        r = httpx.post(f'{url}/predict', params=dict(model='student'), files=dict(file=('a.png', data)), timeout=60)
        assert r.status_code == 200 and r.json()['model'] == 'student'
        def one():
            try: httpx.post(f'{url}/predict', files=dict(file=('a.png', data)), timeout=60)
            except httpx.HTTPError: pass  # cut off by the stop: expected
        load = [threading.Thread(target=one, daemon=True) for _ in range(12)]
        for t in load: t.start()
        time.sleep(1.)  # model calls are running on both workers, more requests queued
    finally:
        t0 = time.time(); p.terminate(); out, err = p.communicate(timeout=60)
    assert time.time() - t0 < 30 and p.returncode is not None, (time.time() - t0, err[-2000:])
    assert f'on http://127.0.0.1:{port}' in out and '2 worker(s)' in out and 'Traceback' not in err, err[-2000:]
