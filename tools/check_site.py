#!/usr/bin/env python
"""Check the site that tools/build_site.py built, in headless Chromium.

Serves the site on localhost, opens the home page and two module pages in Debian's `chromium` (driven by
Playwright; no `playwright install` needed), and fails on a missing page or file (HTTP 404), a console error
or uncaught exception on those pages, a page that renders no notebook cells, a request to another host (the
site must work offline), or a broken internal link: every internal `href`/`src` on every page of the site
must name a file in the site, and its `#fragment` an element of that page. Saves a screenshot of the home page.

    python tools/build_site.py && python tools/check_site.py --screenshot _site_check/index.png
"""
import argparse, functools, http.server, os, re, shutil, sys, tempfile, threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking']

class Links(HTMLParser):
    "The `id`/`name` anchors of an HTML page, and the URLs it references (`href`, `src`)"
    def __init__(self, text):
        super().__init__(); self.ids,self.urls = set(),[]
        self.feed(text)
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.ids.update(v for k,v in attrs if k=='id' or (k=='name' and tag=='a'))
        for k in ('href', 'src'):
            if a.get(k) is not None and not (tag=='link' and a.get('rel') in ('canonical',)): self.urls.append((tag, k, a[k]))

def site_file(site:Path, path:str):
    "The file in `site` that the URL path `path` (relative to the site root) is served from, or None"
    f = site/unquote(path).lstrip('/')
    if f.is_dir(): f = f/'index.html'
    return f if f.is_file() else None

def check_links(site:Path) -> tuple[int, list]:
    "Check every internal link of every HTML page in `site`: the number checked, and the broken ones"
    pages = {p.relative_to(site).as_posix(): Links(p.read_text(encoding='utf-8', errors='replace')) for p in sorted(site.rglob('*.html'))}
    n,bad = 0,[]
    for page,links in pages.items():
        base = 'http://site/' + page
        for tag,attr,url in links.urls:
            if re.match(r'^(mailto|javascript|data|tel):', url, re.I) or url in ('', '#'): continue
            u = urlsplit(urljoin(base, url))
            if u.netloc!='site': continue  # another host: not this site's to check
            n += 1
            target = site_file(site, u.path)
            if target is None: bad.append(f'{page}: <{tag} {attr}="{url}">: no such file {unquote(u.path)!r} in the site'); continue
            rel = target.relative_to(site).as_posix()
            if u.fragment and rel in pages and unquote(u.fragment) not in pages[rel].ids:
                bad.append(f'{page}: <{tag} {attr}="{url}">: {rel} has no element with id {unquote(u.fragment)!r}')
    return n, bad

def serve(site:Path):
    "Serve `site` on a free localhost port in a thread; the server, and the list of (status, path) it logs"
    log = []
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code='-', size='-'): log.append((int(code) if str(code).isdigit() else code, self.path))
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, log

def page_url(name:str) -> str:
    "`nbs/00_coco.ipynb`, `00_coco`, `coco` or `coco.html` -> `coco.html` (nbdev's page names drop the number)"
    stem = Path(name).stem
    return 'index.html' if stem in ('index', '') else re.sub(r'^\d+[a-z]?_', '', stem) + '.html'

def check_pages(site:Path, pages:list, screenshot:Path, chromium:str) -> list:
    "Open `pages` in headless Chromium; the problems found. Screenshots the first page into `screenshot`"
    try: from playwright.sync_api import sync_playwright
    except ImportError: sys.exit('check_site.py: FAILED: playwright is not installed: pip install -e ".[dev,docs]" (no `playwright install`: it uses Debian\'s chromium)')
    srv, log = serve(site)
    base = f'http://127.0.0.1:{srv.server_port}/'
    problems, external = [], set()
    def route(r):
        if r.request.url.startswith(base): return r.continue_()
        external.add(r.request.url); r.abort()  # offline and deterministic: the site must not need other hosts
    udd = tempfile.mkdtemp(prefix='check_site_chromium_')  # a fresh profile each run
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(udd, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                                                        viewport={'width': 1280, 'height': 900})
            ctx.route('**/*', route)
            for i,name in enumerate(pages):
                url, errors = base + name, []
                pg = ctx.new_page()
                pg.on('console', lambda m, errors=errors: m.type=='error' and errors.append(f'console error: {m.text} ({m.location.get("url")})'))
                pg.on('pageerror', lambda e, errors=errors: errors.append(f'uncaught exception: {e}'))
                pg.on('requestfailed', lambda r, errors=errors: r.url.startswith(base) and errors.append(f'request failed: {r.url} ({r.failure})'))
                resp = pg.goto(url, wait_until='load')
                if resp is None or resp.status!=200:
                    problems.append(f'{name}: HTTP {resp.status if resp else "no response"}'); pg.close(); continue
                pg.wait_for_load_state('networkidle')
                title = pg.locator('article h1').first.inner_text(timeout=5000) if pg.locator('article h1').count() else ''
                cells = pg.locator('.jp-Cell').count()
                hrefs = pg.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)')
                internal = [h for h in hrefs if h.startswith(base)]
                for h in internal:  # as the browser resolves them, in case scripts changed them
                    if site_file(site, urlsplit(h).path[len(urlsplit(base).path):]) is None: errors.append(f'broken link: {h}')
                if not title or not cells: errors.append(f'nothing rendered: title {title!r}, {cells} notebook cells')
                if i==0:
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    pg.screenshot(path=str(screenshot))
                print(f'  {name:20} HTTP {resp.status}, title {title!r}, {cells} notebook cells, {len(internal)} internal links, '
                      f'{len(errors)} console errors/problems')
                problems += [f'{name}: {e}' for e in errors]
                pg.close()
            ctx.close()
    finally:
        srv.shutdown(); shutil.rmtree(udd, ignore_errors=True)
    problems += [f'HTTP {c}: {p}' for c,p in log if c==404]
    problems += [f'request to another host (blocked): {u}' for u in sorted(external)]
    return problems

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--site', default='_site', help='the built site (default: _site)')
    p.add_argument('--screenshot', default='_site_check/index.png', help='where to save the screenshot of the home page')
    p.add_argument('--pages', nargs='+', default=['index.html', 'nbs/00_coco.ipynb', 'nbs/30_teachers.ipynb'],
                   help='pages to open in Chromium, as pages or notebooks (the first is screenshotted)')
    p.add_argument('--chromium', default=os.environ.get('CHROMIUM', '/usr/bin/chromium'), help='Chromium executable')
    args = p.parse_args()
    site, shot = (ROOT/args.site).resolve(), (ROOT/args.screenshot).resolve()
    if not (site/'index.html').is_file(): sys.exit(f'check_site.py: FAILED: {site}/index.html not found; run tools/build_site.py first')
    if not shutil.which(args.chromium): sys.exit(f'check_site.py: FAILED: no Chromium at {args.chromium} (apt-get install chromium)')

    n, bad = check_links(site)
    print(f'internal links: {n} checked on {len(list(site.rglob("*.html")))} pages, {len(bad)} broken')
    pages = [page_url(o) for o in args.pages]
    print(f'opening {len(pages)} pages in headless Chromium ({args.chromium}):')
    problems = bad + check_pages(site, pages, shot, args.chromium)
    if problems:
        sys.stdout.flush()
        print(f'check_site.py: FAILED with {len(problems)} problems:', *problems, sep='\n  ', file=sys.stderr)
        sys.exit(1)
    print(f'OK: no missing pages, broken links or console errors; screenshot of {pages[0]} in {shot}')

if __name__ == '__main__': main()
