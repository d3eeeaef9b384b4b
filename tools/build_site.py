#!/usr/bin/env python
"""Build the docs site from the notebooks with pip-installable tools only (no Quarto).

`nbdev-docs` needs Quarto. This script runs the same nbdev notebook processing as `nbdev-proc-nbs`
(`nbdev.processors.FilterDefaults`, which renders `show_doc` signatures and docstrings) into nbdev's
`_proc/` folder, turns the Quarto cell options it leaves behind into what nbconvert understands, and
renders the notebooks with their committed outputs (nothing is executed beyond what nbdev executes
for `show_doc`) into a static site with mkdocs-material and mkdocs-jupyter.

    pip install -e ".[dev,docs]"
    python tools/build_site.py             # build _site/ (open _site/index.html, or check it with tools/check_site.py)
    python tools/build_site.py --force     # reprocess every notebook, ignoring the `_proc/` cache

Every notebook in `nbs/` becomes a page named like nbdev names it (`00_coco.ipynb` -> `coco.html`), in
notebook-number order, titled by its first heading; `index.ipynb` (the README's source) is the home page.
"""
import argparse, os, posixpath, re, shutil, subprocess, sys, tempfile, time
from urllib.parse import unquote
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml
from fastcore.nbio import read_nb, write_nb
from nbdev.config import get_config
from nbdev.doclinks import nbglob
from nbdev.processors import FilterDefaults
try: from mkdocs_jupyter.utils import slugify  # how mkdocs-jupyter makes heading ids
except ImportError: sys.exit('build_site.py: FAILED: mkdocs-jupyter is not installed: pip install -e ".[dev,docs]"')
import nbdev.serve_drv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_readme import apply_cell_options  # honours `#| echo/output/include/eval` as Quarto would

class BuildError(Exception): pass

def proc_nbs(nbs:list, cfg, force=False, workers=2) -> Path:
    "Process `nbs` into nbdev's `_proc/` folder (skipping up-to-date ones); raise `BuildError` listing every failure"
    cache = cfg.config_path/'_proc'
    deps = [cfg.config_file, Path(nbdev.serve_drv.__file__).with_name('processors.py'), *cfg.lib_path.glob('*.py')]  # and the library
    newest = max(p.stat().st_mtime for p in deps)
    todo = []
    for src in nbs:
        dst = cache/src.relative_to(cfg.nbs_path)
        if force or not dst.exists() or dst.stat().st_mtime < max(src.stat().st_mtime, newest): todo.append((src, dst))
        dst.parent.mkdir(parents=True, exist_ok=True)
    print(f'processing {len(todo)} of {len(nbs)} notebooks with nbdev (show_doc) into {cache.relative_to(cfg.config_path)}/ ...', flush=True)
    errs = []
    # what `nbdev.serve.proc_nbs` runs for each notebook; spawned workers start in the project root (`get_config()`)
    with ProcessPoolExecutor(max(1, min(workers, len(todo))), mp_context=get_context('spawn')) as ex:
        for src,dst,f in [(s, d, ex.submit(nbdev.serve_drv.main, (s, d, FilterDefaults))) for s,d in todo]:
            try: f.result()
            except Exception as e:
                errs.append(f'--- {src.relative_to(cfg.config_path)}:\n{type(e).__name__}: {e}'); dst.unlink(missing_ok=True)
    if errs: raise BuildError('nbdev could not process these notebooks, so nbdev-docs would fail on them too. To render '
        'show_doc, nbdev runs only the exported cells, the show_doc cells and every cell that imports something: keep imports '
        'in cells of their own, and make what show_doc needs (annotations included) importable from the module:\n' + '\n'.join(errs))
    return cache

def page_name(nb:Path, fm:dict) -> str:
    "The page's file name stem: nbdev's `output-file` (e.g. `coco`), else the notebook name without its number"
    if fm.get('output-file'): return Path(fm['output-file']).stem
    return re.sub(r'^\d+[a-z]?_', '', nb.stem)

def first_heading(nb) -> str|None:
    "The text of the first markdown heading in `nb`"
    for c in nb.cells:
        if c.cell_type=='markdown' and (m := re.search(r'^#{1,6}\s+(.+?)\s*$', c.source, re.MULTILINE)): return m.group(1)

def front_matter(nb) -> dict:
    "The YAML front matter nbdev's `FrontmatterProc` put in a raw cell (removed from `nb`), or {}"
    for i,c in enumerate(nb.cells):
        if c.cell_type=='raw' and c.source.lstrip().startswith('---'):
            del nb.cells[i]
            return yaml.safe_load(c.source.strip().strip('-')) or {}
    return {}

# Quarto/pandoc link attributes, e.g. show_doc's `[source](url){target="_blank" style="float:right"}`
_re_attr_link = re.compile(r'\[([^\]]*)\]\(([^)\s]+)\)\{([^}\n]*)\}')
_re_md_target = re.compile(r'(\]\()([^)\s]+)')
_re_html_target = re.compile(r'''((?:href|src)=["'])([^"']+)''')
_re_heading = re.compile(r'^#{1,6}\s+(.+?)\s*#*\s*$')

class LinkFixer:
    "Point links to notebooks and to the hosted nbdev docs at this site's pages, note the files in `nbs/` that links need, count what was rewritten"
    def __init__(self, pages:dict, cfg):
        self.doc_url,self.nbs,self.root = cfg.doc_url.rstrip('/')+'/',cfg.nbs_path,cfg.config_path
        self.blob = f"{cfg.git_url.rstrip('/')}/blob/{cfg.branch}/"
        self.counts,self.anchors,self.assets = {},0,set()
        self.names = {}  # every name a page goes by -> its file in the site
        for nb,page in pages.items():
            for n in (nb.name, nb.stem+'.html', nb.stem+'.qmd', nb.stem+'.md', page+'.ipynb', page+'.html', page+'.md', page+'.qmd'):
                self.names[n] = page+'.html'

    def target(self, t:str) -> str:
        path,hash_,frag = t.partition('#')
        if path.startswith(self.doc_url): path,kind = path[len(self.doc_url):] or 'index.html', 'hosted docs URL'
        elif re.match(r'^([a-z][\w+.-]*:|/|#)', t, re.I): return t  # other absolute URLs, site paths and anchors stay
        else: kind = 'relative link'
        new = self.names.get(posixpath.normpath(path), path if kind=='hosted docs URL' else None)  # an unknown page: checked as broken
        if new is None:
            f = (self.nbs/unquote(path)).resolve()
            if f.is_file() and f.is_relative_to(self.nbs): self.assets.add(f); return t  # copied into the site
            if f.is_file() and f.is_relative_to(self.root): new,kind = self.blob + f.relative_to(self.root).as_posix(), 'link to a repo file'
        if new is None or new+hash_+frag==t: return t  # what is left broken, tools/check_site.py reports
        k = f'{kind} {t.partition("#")[0]} -> {new}'
        self.counts[k] = self.counts.get(k, 0) + 1
        return new + hash_ + frag

    def attr_link(self, m):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(3)))
        return f'<a href="{m.group(2)}"' + ''.join(f' {k}="{v}"' for k,v in attrs.items()) + f'>{m.group(1)}</a>'

    def anchor(self, l:str) -> str:
        "Heading `l`, after an anchor with the id Quarto gives it (which nbdev links use) where mkdocs-jupyter's differs"
        m = _re_heading.match(l)
        if not m: return l
        text = re.sub(r'[`*]', '', m.group(1)).strip()
        qid = re.sub(r'^[^a-z]+', '', re.sub(r'\s+', '-', re.sub(r'[^\w\s.-]', '', text.lower())))  # pandoc's auto identifier
        if not qid or qid==slugify(text): return l
        self.anchors += 1
        return f'<a id="{qid}"></a>\n\n{l}'

    def __call__(self, md:str) -> str:
        lines,fence = md.splitlines(),False
        for i,l in enumerate(lines):
            if l.lstrip().startswith(('```','~~~')): fence = not fence
            elif not fence:
                l = self.anchor(_re_attr_link.sub(self.attr_link, l))
                l = _re_md_target.sub(lambda m: m.group(1)+self.target(m.group(2)), l)
                lines[i] = _re_html_target.sub(lambda m: m.group(1)+self.target(m.group(2)), l)
        return '\n'.join(lines)

_nb_cell_keys = {'cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments'}

def _outs(c): return [{k:v for k,v in o.items() if k!='execution_count'} for o in c.get('outputs', [])]

def keep_committed_outputs(nb, src:Path) -> int:
    "Give `nb`'s cells the outputs committed in `src`, but for show_doc's; the number of cells nbdev had re-run with other outputs"
    committed = {c.id: c for c in read_nb(src).cells if c.cell_type=='code' and 'id' in c}
    n = 0
    for c in nb.cells:  # nbdev re-runs exported cells and every cell with an import (to render show_doc), new outputs and all
        if c.cell_type!='code' or c.get('id') not in committed or 'show_doc' in c.source: continue
        if _outs(c)!=_outs(committed[c.id]): c['outputs'],n = committed[c.id].get('outputs', []),n+1
    return n

def stage_page(src:Path, dst:Path, fm:dict, nb, fix:LinkFixer):
    "Write `nb` (processed) to `dst` as mkdocs-jupyter will render it"
    if n := keep_committed_outputs(nb, src): print(f'  {src.name}: kept the committed outputs of {n} cells that nbdev re-ran (imports mixed with code)')
    apply_cell_options(nb)
    if fm.get('title'):  # nbdev took the `# title` and `> description` cell into the front matter: put them back
        head = [f"# {fm['title']}"] + ([f"> {fm['description']}"] if fm.get('description') else [])
        nb.cells.insert(0, dict(cell_type='markdown', metadata={}, source='\n\n'.join(head)))
    for c in nb.cells:
        for k in set(c) - _nb_cell_keys: del c[k]  # e.g. nbdev's `has_sd`, which nbformat's validation refuses
        c.get('metadata', {}).pop('execution', None)  # show_doc's timings, not in nbformat's schema either
        if c.get('cell_type')=='markdown': c['source'] = fix(c['source'])
        for o in c.get('outputs', []):
            d = o.get('data', {})
            if 'text/markdown' in d: d['text/markdown'] = fix(''.join(d['text/markdown']))
    nb.metadata.pop('widgets', None)  # widget state (nbdev adds one to every notebook) makes a page load widget JS from a CDN; widget outputs show their text instead
    write_nb(nb, dst)

def mkdocs_config(cfg, docs:Path, site:Path, nav:list) -> dict:
    return dict(
        site_name=cfg.get('title', cfg.lib_name), site_description=cfg.get('description', ''),
        docs_dir=str(docs), site_dir=str(site), use_directory_urls=False, strict=True,
        # no `repo_url`: material would fetch the repo's stars from api.github.com; a plain footer link instead
        extra=dict(social=[dict(icon='fontawesome/brands/github', link=cfg.git_url, name='Repository')]),
        theme=dict(name='material', font=False, features=['navigation.footer', 'navigation.top', 'toc.follow']),  # no Google Fonts
        plugins=['search', {'mkdocs-jupyter': dict(include=['*.ipynb'], execute=False, include_source=False, cache=False, no_prompt=True,
                                                   include_requirejs=False, custom_mathjax_url='')}],  # no MathJax from a CDN (no notebook has maths)
        nav=nav)

def build(out:Path, force=False, workers=2):
    cfg = get_config(Path(__file__).resolve().parent)
    os.chdir(cfg.config_path)
    nbs = sorted(nbglob(cfg.nbs_path, func=Path), key=lambda p: (p.name!=cfg.readme_nb, p.relative_to(cfg.nbs_path).as_posix()))
    if not nbs: raise BuildError(f'no notebooks found in {cfg.nbs_path}')
    cache = proc_nbs(nbs, cfg, force=force, workers=workers)
    with tempfile.TemporaryDirectory(prefix='site_src_') as tmp:
        docs = Path(tmp)/'docs'; docs.mkdir()
        staged = {}
        for src in nbs:
            nb = read_nb(cache/src.relative_to(cfg.nbs_path))
            fm = front_matter(nb)
            name = 'index' if src.name==cfg.readme_nb else page_name(src, fm)
            title = fm.get('title') or first_heading(nb) or name  # nbdev's front matter has the notebook's `# title`, if any
            if name in {p for p,*_ in staged.values()}: raise BuildError(f'{src.name}: page name {name!r} is already taken')
            staged[src] = (name, title, fm, nb)
        fix = LinkFixer({src: name for src,(name,*_) in staged.items()}, cfg)
        nav = []
        for src,(name,title,fm,nb) in staged.items():
            stage_page(src, docs/f'{name}.ipynb', fm, nb, fix)
            nav.append({str(title): f'{name}.ipynb'})
        for f in fix.assets:  # files in nbs/ that the notebooks link to, e.g. images
            (docs/f.relative_to(cfg.nbs_path)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, docs/f.relative_to(cfg.nbs_path))
        (Path(tmp)/'mkdocs.yml').write_text(yaml.safe_dump(mkdocs_config(cfg, docs, out, nav), sort_keys=False))
        if out.exists(): shutil.rmtree(out)
        print(f'rendering {len(nav)} pages with mkdocs-material + mkdocs-jupyter ...', flush=True)
        r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '-f', 'mkdocs.yml'], cwd=tmp, capture_output=True, text=True)
        if r.returncode: raise BuildError(f'mkdocs build failed ({r.returncode}):\n{r.stdout}{r.stderr}')
    for k,n in sorted(fix.counts.items()): print(f'  rewrote {n}x {k}')
    print(f'  added {fix.anchors} heading anchors with the ids Quarto would give them (e.g. `#cocodataset.__getitem__`)')
    print(f'built {len(nav)} pages into {out}/:')
    for src,(name,title,*_) in staged.items():
        if not (out/f'{name}.html').exists(): raise BuildError(f'{name}.html (from {src.name}) was not built')
        print(f'  {name+".html":24} {src.relative_to(cfg.config_path)}  "{title}"')

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='_site', help='folder to build the site into, relative to the project root (default: _site)')
    p.add_argument('--force', action='store_true', help='reprocess every notebook, ignoring the _proc/ cache')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 2, help='notebooks processed in parallel')
    args = p.parse_args()
    t = time.time()
    root = get_config(Path(__file__).resolve().parent).config_path
    try: build((root/args.out).resolve(), force=args.force, workers=args.workers)
    except BuildError as e: sys.exit(f'build_site.py: FAILED: {e}')
    print(f'done in {time.time()-t:.0f}s')

if __name__ == '__main__': main()
