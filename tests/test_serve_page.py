"The page at / in a real browser (Playwright driving Debian's chromium, as tools/check_site.py does): upload, overlay, slider, download."
import json, os, shutil, socket, tempfile, threading, time
from pathlib import Path
import pytest
from teacher_lora.evaluate import load_teachers
from teacher_lora.serve import Teachers, make_app

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking']
pytest.importorskip('playwright')
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

@pytest.fixture(scope='module')
def server(exp):
    "The app over a one-epoch tiny experiment (conftest's `exp`), served by uvicorn in a thread on a free localhost port."
    import uvicorn
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(make_app(dict(teachers=Teachers(load_teachers(exp[0])))), host='127.0.0.1', port=port, log_level='warning'))
    t = threading.Thread(target=srv.run, daemon=True); t.start()
    while not srv.started: time.sleep(.05)
    yield f'http://127.0.0.1:{port}/', exp[1]
    srv.should_exit = True; t.join(30)

def test_page_upload_overlay_slider(server, tmp_path):
    from playwright.sync_api import sync_playwright
    base, images = server
    errors, external = [], []
    udd = tempfile.mkdtemp(prefix='serve_page_chromium_')
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(udd, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                                        viewport={'width': 1280, 'height': 900}, accept_downloads=True)
            ctx.route('**/*', lambda r: r.continue_() if r.request.url.startswith(base) else (external.append(r.request.url), r.abort()))
            pg = ctx.new_page()
            pg.on('console', lambda m: m.type == 'error' and errors.append(f'console error: {m.text}'))
            pg.on('pageerror', lambda e: errors.append(f'uncaught exception: {e}'))
            assert pg.goto(base).status == 200
            pg.wait_for_selector('#classes input[type=checkbox]')
            assert pg.locator('#classes input').count() == 4  # the experiment's classes (square had no annotations)
            pg.set_input_files('#file', str(images/'00002.png'))
            pg.wait_for_function("document.getElementById('status').textContent.includes('detections shown')", timeout=60_000)
            pg.locator('#threshold').fill('0.05')
            n_low = int(pg.locator('#view').get_attribute('data-drawn'))
            assert n_low > 0 and pg.locator('#dets li').count() == n_low
            overlay = pg.evaluate("document.getElementById('view').toDataURL()")
            pg.screenshot(path=str(tmp_path/'serve_page.png'))
            pg.locator('#threshold').fill('1')  # nothing scores 1: the image alone, redrawn without a request
            assert pg.locator('#view').get_attribute('data-drawn') == '0' and pg.locator('#dets li').count() == 0
            assert pg.evaluate("document.getElementById('view').toDataURL()") != overlay
            pg.locator('#threshold').fill('0.05')
            first = pg.locator('#classes input').first; first.uncheck()  # a class toggled off: its detections leave the list
            n_off = int(pg.locator('#view').get_attribute('data-drawn'))
            assert n_off <= n_low
            with pg.expect_download() as dl: pg.click('#download')
            saved = json.loads(Path(dl.value.path()).read_text())
            assert len(saved['annotations']) == n_off and saved['threshold'] == .05
            assert all(a['category_id'] != int(first.get_attribute('value')) for a in saved['annotations'])
            ctx.close()
    finally: shutil.rmtree(udd, ignore_errors=True)
    assert not errors, errors
    assert not external, external
    assert (tmp_path/'serve_page.png').stat().st_size > 10_000
