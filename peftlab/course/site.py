"""The course as static HTML pages that open offline, from a file:// URL (`make site`).

    python -m peftlab.course.site [--notebooks notebooks] [--out site]

Every notebook in notebooks/ (in name order) and in notebooks/solutions/ becomes one page,
rendered by nbconvert's HTML exporter from its committed outputs (nothing is executed). index.html
lists the notebooks with the title and first sentence(s) of each one's first Markdown cell, and links
each to its solutions. New notebooks appear by themselves: nothing here names one.

Offline means nothing is fetched: MathJax is copied from the `jupyter-server-mathjax` package
(without it, pages load MathJax from a CDN and say so), no require.js or widget manager is loaded,
and each ipywidget is drawn as the notebook saved it (`peftlab.course.widget_snapshot`); the widget state
stays embedded in the page. Links between notebooks point to their pages; links to other files of
the repository point to those files.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import markdown2html_mistune  # keeps $math$ intact

from peftlab.course.widget_snapshot import snapshot_widgets

MARKER = ".peftlab-site"   # written into every built site: only such a folder is ever replaced
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"   # the one full config jupyter-server-mathjax ships
MATHJAX_CDN = f"https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config={MATHJAX_CONFIG}"
# jupyter-server-mathjax ships the STIX-Web fonts only; MathJax would first look for its TeX fonts.
MATHJAX_FONTS = ('{"HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", '
                 'webFont: "STIX-Web", imageFont: null}}')
# nbconvert's JupyterLab template without what would be fetched from a CDN: require.js, the
# widget manager (widgets are drawn statically instead) and mermaid (no notebook uses it).
TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock %}
{% block jupyter_widgets %}{% endblock %}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block html_head_js_mathjax %}{{ super() }}
<script type="text/x-mathjax-config">MathJax.Hub.Config(""" + MATHJAX_FONTS + """);</script>
{% endblock %}
"""
ABBREVIATIONS = ("et al.", "e.g.", "i.e.", "cf.", "vs.", "Fig.", "Eq.", "Sec.")


@dataclass
class Page:
    source: Path      # the .ipynb
    out: str          # its page, relative to the site's root, with "/" separators
    title: str
    summary: str      # Markdown: the first sentence(s) after the title


def discover(notebooks_dir: Path) -> tuple[list[Path], list[Path]]:
    """The course's notebooks and their solutions, each in name order."""
    notebooks = sorted(notebooks_dir.glob("*.ipynb"))
    solutions = sorted((notebooks_dir / "solutions").glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks in {notebooks_dir}: pass --notebooks with the course's folder")
    return notebooks, solutions


def first_sentences(paragraph: str, min_chars: int = 80) -> str:
    """The paragraph's first sentences, as few as make `min_chars` characters ("Notebook 02 built
    LoRA." alone says little). An abbreviation such as "et al." does not end a sentence."""
    text = " ".join(paragraph.split())
    for match in re.finditer(r"[.!?](?=\s+[A-Z*_`$(\[])", text):
        end = match.end()
        if end >= min_chars and not any(text[:end].endswith(a) for a in ABBREVIATIONS):
            return text[:end]
    return text[:-1] + "…" if text.endswith(":") else text   # "...reproduces:" introduced what follows


def describe(nb, path: Path) -> tuple[str, str]:
    """(title, summary) from the notebook's first Markdown cell: its title line, its first sentences."""
    cell = next((c for c in nb.cells if c.cell_type == "markdown" and c.source.strip()), None)
    if cell is None or not cell.source.lstrip().startswith("# "):
        raise ValueError(f"{path}: the first Markdown cell must start with a '# ' title line "
                         "(the index page lists that title)")
    title, _, rest = cell.source.lstrip().partition("\n")
    paragraphs = [p for p in re.split(r"\n\s*\n", rest) if p.strip()]
    return title[2:].strip(), first_sentences(paragraphs[0]) if paragraphs else ""


def _relative(target: str, page: str) -> str:
    """URL of `target` (relative to the site root) from the page `page`."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


def rewrite_links(page_html: str, source: Path, page: str, site_root: Path, pages: dict[Path, str]) -> str:
    """Relative links in a page: to a notebook of the site -> its page; to any other file -> that file."""
    def fix(match: re.Match) -> str:
        url = match.group(2)
        if not url or url.startswith(("#", "/")) or re.match(r"^[a-zA-Z][\w+.-]*:", url):
            return match.group(0)
        path, hash_, fragment = url.partition("#")
        target = (source.parent / urllib.parse.unquote(path)).resolve()
        if target in pages:
            new = _relative(pages[target], page)
        else:   # a file of the repository: link to it where it lies
            new = os.path.relpath(target, (site_root / page).parent).replace(os.sep, "/")
        return match.group(1) + urllib.parse.quote(new) + hash_ + fragment + match.group(3)
    return re.sub(r'(<a\b[^>]*?\bhref=")([^"]*)(")', fix, page_html)


def _nav(page: Page, pages: list[Page], solutions: dict[str, Page]) -> str:
    links = [f'<a href="{_relative("index.html", page.out)}">course index</a>']
    if page in pages:
        i = pages.index(page)
        if i > 0:
            links.append(f'<a href="{_relative(pages[i - 1].out, page.out)}">← {html.escape(pages[i - 1].title)}</a>')
        if i + 1 < len(pages):
            links.append(f'<a href="{_relative(pages[i + 1].out, page.out)}">{html.escape(pages[i + 1].title)} →</a>')
        if page.source.stem in solutions:
            links.append(f'<a href="{_relative(solutions[page.source.stem].out, page.out)}">solutions</a>')
    return ('<nav style="padding:0.5em 1em;border-bottom:1px solid #ddd;font-family:sans-serif">'
            + " · ".join(links) + "</nav>")


def _mathjax(site_root: Path) -> str | None:
    """Copy MathJax into the site; return its path relative to the root (None: not installed)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    # MathJax speaks English without its localization folder: the other 2 MB are translations.
    shutil.copytree(source, site_root / "_static" / "mathjax",
                    ignore=lambda d, names: [n for n in names if Path(d).name == "localization" and n != "en"])
    return "_static/mathjax/MathJax.js"


def render_page(page: Page, exporter, site_root: Path, url_of: dict[Path, str], nav: str, mathjax: str) -> None:
    nb = nbformat.read(page.source, as_version=4)
    snapshot_widgets(nb)
    nb.metadata["title"] = page.title
    exporter.mathjax_url = (MATHJAX_CDN if mathjax.startswith("http")
                            else f"{_relative(mathjax, page.out)}?config={MATHJAX_CONFIG}")
    body, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": page.source.stem, "path": str(page.source.parent)}})
    body = rewrite_links(body, page.source, page.out, site_root, url_of)
    body = body.replace("<main>", "<main>\n" + nav, 1).replace("</main>", nav + "\n</main>", 1)
    out = site_root / page.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")


def index_html(pages: list[Page], solutions: dict[str, Page], extra: list[Page], mathjax: str) -> str:
    """The index: one row per notebook (title, first sentence, solutions), then unmatched solutions."""
    def row(p: Page) -> str:
        summary = markdown2html_mistune(p.summary).strip().removeprefix("<p>").removesuffix("</p>")
        solution = solutions.get(p.source.stem)
        link = f'<a class="solutions" href="{solution.out}">solutions</a>' if solution else ""
        return (f'<tr><td><a class="notebook" href="{p.out}">{html.escape(p.title)}</a></td>'
                f"<td>{summary}</td><td>{link}</td></tr>")

    src = MATHJAX_CDN if mathjax.startswith("http") else f"{mathjax}?config={MATHJAX_CONFIG}"
    rows = "\n".join(row(p) for p in pages)
    others = "".join(f'<li><a class="solutions" href="{p.out}">{html.escape(p.title)}</a></li>' for p in extra)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>peftlab: the course</title>
<script src="{src}"></script>
<script type="text/x-mathjax-config">
MathJax.Hub.Config({{tex2jax: {{inlineMath: [['$', '$']], processEscapes: true}}, messageStyle: "none"}});
MathJax.Hub.Config({MATHJAX_FONTS});
</script>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
td {{ vertical-align: top; padding: 0.4em 0.8em 0.4em 0; border-bottom: 1px solid #eee; }}
td:first-child {{ width: 35%; }}
</style></head>
<body>
<h1>peftlab: the course</h1>
<p>Parameter-efficient fine-tuning, built from scratch, one notebook at a time. These pages show the
notebooks as committed, with their outputs; to run them and use the widgets, open them in JupyterLab
(<code>make lab</code>).</p>
<table>
<tr><th>notebook</th><th>what it does</th><th></th></tr>
{rows}
</table>
{f"<h2>Other solutions</h2><ul>{others}</ul>" if others else ""}
</body></html>
"""


def build_site(notebooks_dir: Path, out: Path) -> list[Page]:
    """Write the site to `out` (replacing a site built there before); return its pages."""
    notebooks_dir, out = Path(notebooks_dir).resolve(), Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(f"{out} exists and is not a site built by peftlab.course.site; "
                              "pass --out with a new or empty folder")
    notebook_paths, solution_paths = discover(notebooks_dir)

    def page(path: Path, folder: str) -> Page:
        title, summary = describe(nbformat.read(path, as_version=4), path)
        return Page(path.resolve(), f"{folder}/{path.stem}.html", title, summary)

    pages = [page(p, "notebooks") for p in notebook_paths]
    solution_pages = [page(p, "notebooks/solutions") for p in solution_paths]
    solutions = {p.source.stem.removesuffix("_solutions"): p for p in solution_pages}
    extra = [p for p in solution_pages if p.source.stem.removesuffix("_solutions") not in
             {n.source.stem for n in pages}]
    url_of = {p.source: p.out for p in pages + solution_pages}

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by `python -m peftlab.course.site`; replaced on every build\n")
    mathjax = _mathjax(out)
    if mathjax is None:
        print("jupyter-server-mathjax is not installed: the pages load MathJax from a CDN "
              "(pip install jupyter-server-mathjax for offline formulas)", file=sys.stderr)
        mathjax = MATHJAX_CDN
    exporter = HTMLExporter(template_name="lab", embed_images=True,
                            extra_loaders=[DictLoader({"peftlab_site.html.j2": TEMPLATE})],
                            template_file="peftlab_site.html.j2")
    for p in pages + solution_pages:
        render_page(p, exporter, out, url_of, _nav(p, pages, solutions), mathjax)
    (out / "index.html").write_text(index_html(pages, solutions, extra, mathjax), encoding="utf-8")
    return pages + solution_pages


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="the course's folder")
    parser.add_argument("--out", type=Path, default=Path("site"), help="where the site goes (replaced)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pages = build_site(args.notebooks, args.out)
    index = (args.out / "index.html").resolve()
    print(f"{len(pages)} pages, {_size(args.out) / 2**20:.1f} MiB, in {time.perf_counter() - started:.1f} s; "
          f"open {index.as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
