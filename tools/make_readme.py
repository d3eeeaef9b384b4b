#!/usr/bin/env python
"""Build README.md from the nbdev index notebook, without Quarto.

`nbdev-readme` renders with Quarto. This script runs the same nbdev notebook processors
(`nbdev.processors.FilterDefaults`: front matter, `#| hide`/`#| export` removal, magics and
ANSI cleanup, ...) and renders the result with nbconvert's `MarkdownExporter`, so it needs
only pip-installable tools (`pip install -e ".[dev]"`).

    python tools/make_readme.py          # write README.md (and any output images)
    python tools/make_readme.py --check  # exit 1 with a diff if README.md is out of date
"""
import argparse, difflib, os, posixpath, re, runpy, sys
from pathlib import Path

import nbformat
from fastcore.nbio import nb2str, read_nb
from jinja2 import DictLoader
from nbconvert import MarkdownExporter
from nbconvert.filters import strip_ansi
from nbdev.config import get_config
from nbdev.doclinks import NbdevLookup, _qual_syms
from nbdev.processors import FilterDefaults, add_links, add_show_docs, exec_show_docs
from nbdev.readme_filter import doc_link

# nbconvert's markdown template, with fenced (not indented) text outputs and a per-cell language
TEMPLATE = r"""{% extends 'markdown/index.md.j2' %}
{% block input %}
```{{ cell.metadata.get('language', '') }}
{{ cell.source }}
```
{% endblock input %}
{% block stream %}
```
{{ output.text.rstrip() }}
```
{% endblock stream %}
{% block data_text scoped %}
```
{{ output.data['text/plain'].rstrip() }}
```
{% endblock data_text %}
"""

class RepoLookup(NbdevLookup):
    "`NbdevLookup` over this repo's own `_modidx.py` only, so links don't depend on which nbdev libraries are installed"
    def __init__(self, modidx:Path):
        syms = _qual_syms(runpy.run_path(str(modidx))['d'])['syms'] if modidx.exists() else {}
        short = {}  # `foo` and `Foo.bar` as well as `pkg.mod.foo`, like `NbdevLookup(strip_libs=lib_name)`
        for mod,d in syms.items():
            for k,v in d.items(): short.setdefault(k.removeprefix(f'{mod}.'), v)
        self.entries,self.aliases = {},{}
        self.syms = short | {k:v for d in syms.values() for k,v in d.items()}

class ReadmeFilter(FilterDefaults):
    "nbdev's doc processors, minus those that execute code or depend on the installed environment"
    def __init__(self, cfg, srcdir:str):
        self.cfg,self.srcdir = cfg,srcdir
        self.lookup = RepoLookup(cfg.lib_path/'_modidx.py')

    def base_procs(self):
        # `add_show_docs`/`exec_show_docs` would import the library (torch, ...) in a kernel; `add_links` is replaced
        skip = {add_show_docs, exec_show_docs, add_links}
        return [p for p in super().base_procs() if p not in skip] + [self.links]

    def links(self, cell):
        "Link backticked symbols to the docs, and make relative markdown links work from the README's folder"
        if cell.cell_type!='markdown': return
        docdir = Path(self.cfg.readme_nb).parent.as_posix()  # as in nbdev's `readme_filter`
        cell.source = fix_links(self.lookup.linkify(cell.source), self.cfg.doc_url, docdir, self.srcdir)

def fix_links(md:str, doc_url:str, docdir:str, srcdir:str) -> str:
    "Point `.ipynb`/`.qmd`/`.html` links at the hosted docs, like nbdev's `readme_filter`, and other relative links into `srcdir`"
    def fix(m):
        t = m.group(2)
        if re.match(r'^([a-z][\w+.-]*:|#|/)', t, re.I): return m.group(0)  # absolute URL, anchor or site path
        d = doc_link(t, doc_url, docdir) if doc_url else t
        return m.group(1) + (d if d!=t else posixpath.normpath(posixpath.join(srcdir, t)))
    lines,fence = md.splitlines(),False
    for i,l in enumerate(lines):
        if l.lstrip().startswith('```'): fence = not fence
        elif not fence: lines[i] = re.sub(r'(\]\()([^)\s]+)', fix, l)
    return '\n'.join(lines)

def as_markdown(o):
    "Output `o` as a display of raw markdown, for `#| output: asis`"
    data = o.get('data', {})
    return dict(output_type='display_data', metadata={}, data={'text/markdown': o.get('text') or data.get('text/markdown') or data.get('text/plain', '')})

def apply_cell_options(nb):
    "Honour Quarto cell options that nbdev leaves for Quarto (`include`, `echo`, `output`, `eval`), then strip all `#|` lines"
    cells = []
    for c in nb.cells:
        if c.cell_type=='code':
            d = {k:str(v).lower() for k,v in c.directives.items()}
            if d.get('include')=='false': continue
            if d.get('output')=='false' or d.get('eval')=='false': c.outputs = []
            if d.get('output')=='asis': c.outputs = [as_markdown(o) for o in c.outputs if o.get('output_type')!='error']
            c.remove_directives()
            if d.get('echo')=='false' or not c.source.strip(): c.metadata['transient'] = {'remove_source': True}
            if c.metadata.get('transient') and not c.outputs: continue
        cells.append(c)
    nb.cells = cells

def tidy(md:str) -> str:
    "Strip ANSI codes and trailing whitespace, collapse blank runs outside code fences, end with one newline"
    out,fence = [],False
    for l in strip_ansi(md).splitlines():
        l = l.rstrip()
        if l.lstrip().startswith('```'): fence = not fence
        if not l and not fence and out and not out[-1]: continue
        out.append(l)
    return '\n'.join(out).strip() + '\n'

def make_readme(nb_path:Path, out:Path, cfg) -> tuple[str, dict]:
    "Markdown for `out` from the notebook at `nb_path`, and the output files (images) it references, as `{path: bytes}`"
    nb = read_nb(nb_path)
    srcdir = Path(os.path.relpath(nb_path.parent, out.parent)).as_posix()  # e.g. 'nbs'
    ReadmeFilter(cfg, srcdir)(nb)  # `NBProcessor(nb, procs, rm_directives='quarto').process()`
    fm = getattr(nb, 'frontmatter_', {})
    if fm: nb.cells = [c for c in nb.cells if not (c.cell_type=='raw' and c.source.startswith('---'))]  # from `FrontmatterProc`
    apply_cell_options(nb)
    exp = MarkdownExporter(extra_loaders=[DictLoader({'readme.md.j2': TEMPLATE})], template_file='readme.md.j2')
    body,res = exp.from_notebook_node(nbformat.reads(nb2str(nb), as_version=4), resources={'output_files_dir': f'{nb_path.stem}_files'})
    head = ([f"# {fm['title']}"] if fm.get('title') else []) + ([f"> {fm['description']}"] if fm.get('description') else [])
    return tidy('\n\n'.join(head + [body])), {out.parent/k: v for k,v in res.get('outputs', {}).items()}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='exit 1 if README.md is out of date, without writing')
    p.add_argument('--nb', help="notebook to render (default: nbdev's `readme_nb` in `nbs_path`)")
    p.add_argument('--out', help='file to write (default: README.md at the project root)')
    args = p.parse_args()
    cfg = get_config(Path(__file__).resolve().parent)
    nb_path = Path(args.nb).resolve() if args.nb else cfg.nbs_path/cfg.readme_nb
    out = Path(args.out).resolve() if args.out else cfg.config_path/'README.md'
    os.chdir(cfg.config_path)  # nbdev's processors call a bare `get_config()`
    md,files = make_readme(nb_path, out, cfg)
    if args.check:
        old = out.read_text(encoding='utf-8') if out.exists() else ''
        stale = [str(f.relative_to(out.parent)) for f,v in files.items() if not f.exists() or f.read_bytes()!=v]
        if old==md and not stale: return print(f'{out.name} is up to date')
        diff = list(difflib.unified_diff(old.splitlines(), md.splitlines(), f'{out.name} (current)', f'{out.name} (expected)', lineterm=''))
        print(f'{out.name} is out of date with {nb_path.name}: run `python tools/make_readme.py`', file=sys.stderr)
        if stale: print('missing or changed output files: ' + ', '.join(stale), file=sys.stderr)
        print('\n'.join(diff[:60] + ([f'... ({len(diff)-60} more diff lines)'] if len(diff)>60 else [])), file=sys.stderr)
        sys.exit(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md, encoding='utf-8')
    for f,v in files.items(): f.parent.mkdir(parents=True, exist_ok=True); f.write_bytes(v)
    print(f'Wrote {out}' + (f' and {len(files)} output file(s)' if files else ''))

if __name__ == '__main__': main()
