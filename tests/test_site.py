"""The static site (`make site`, peftlab.course.site): every notebook and solution gets a page, the index
links them all, links between notebooks lead to pages, nothing is fetched from the network, and
widgets are drawn from the state the notebook stored."""
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from peftlab.course.site import MARKER, build_site, describe, first_sentences
from peftlab.course.widget_snapshot import MISSING, NOTE, STATE_MIME, VIEW_MIME, interactive_views, snapshot_widgets

REPO = Path(__file__).resolve().parents[1]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []   # (class, href)
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.links.append((a.get("class") or "", a["href"]))
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _widget_state(models: dict) -> dict:
    return {STATE_MIME: {"version_major": 2, "version_minor": 0,
                         "state": {k: {"model_name": name, "state": s} for k, (name, s) in models.items()}}}


def _view(model_id: str):
    return new_output("display_data", data={VIEW_MIME: {"model_id": model_id, "version_major": 2},
                                            "text/plain": "VBox(children=(...))"})


def _explorer_notebook():
    """A VBox holding a slider and an Output that printed a line, as a saved notebook stores it."""
    nb = new_notebook(cells=[
        new_markdown_cell("# 01 · An explorer\n\nSlide it. It prints."),
        new_code_cell("explorer()", outputs=[_view("box"), _view("gone")]),
    ])
    nb.metadata["widgets"] = _widget_state({
        "box": ("VBoxModel", {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]}),
        "slider": ("IntSliderModel", {"description": "rank r", "value": 8, "min": 1, "max": 64,
                                      "readout_format": "d"}),
        "out": ("OutputModel", {"outputs": [{"output_type": "stream", "name": "stdout", "text": "r = 8\n"}]}),
        "bar": ("HBoxModel", {"children": ["IPY_MODEL_html", "IPY_MODEL_progress"]}),
        "html": ("HTMLModel", {"value": "100%"}),
        "progress": ("FloatProgressModel", {"value": 5, "max": 5}),
    })
    return nb


def test_first_sentences_skip_abbreviations_and_short_openers():
    text = "Hu et al. (2021) wrote it. Short. This one is long enough to stop at, we hope, really."
    assert first_sentences(text + " Not this.") == text
    assert first_sentences("Notebook 02 built LoRA. Here we open its update:") == (
        "Notebook 02 built LoRA. Here we open its update…")


def test_describe_reads_the_title_and_refuses_a_notebook_without_one():
    nb = new_notebook(cells=[new_markdown_cell("# 07 · Adapters\n\nAdapters add small networks.\n\nMore.")])
    assert describe(nb, Path("07.ipynb")) == ("07 · Adapters", "Adapters add small networks.")
    with pytest.raises(ValueError, match="must start with a '# ' title line"):
        describe(new_notebook(cells=[new_markdown_cell("No title here.")]), Path("x.ipynb"))


def test_a_widget_becomes_its_controls_and_the_outputs_it_held():
    nb = _explorer_notebook()
    nb.cells[1].outputs.append(_view("bar"))
    assert interactive_views(nb) == 1   # the progress bar moves nothing; "gone" has no state
    assert snapshot_widgets(nb) == 3
    outputs = nb.cells[1].outputs
    assert not any(VIEW_MIME in o.get("data", {}) for o in outputs)
    html = outputs[0].data["text/html"]
    assert NOTE in html and "rank r" in html and "<b>8</b>" in html
    assert outputs[1].output_type == "stream" and outputs[1].text == "r = 8\n"
    assert outputs[2].data["text/plain"] == MISSING
    assert "<progress" in outputs[3].data["text/html"] and NOTE not in outputs[3].data["text/html"]


def test_a_small_course_builds_with_links_between_its_pages(tmp_path):
    course = tmp_path / "notebooks"
    (course / "solutions").mkdir(parents=True)
    (tmp_path / "peftlab").mkdir()
    (tmp_path / "peftlab" / "course").mkdir(parents=True)
    (tmp_path / "peftlab" / "course" / "widgets.py").write_text("# the explorers\n")
    nbformat.write(_explorer_notebook(), course / "01_explorer.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell(
        "# 00 · Welcome\n\nStart here, then go to [the explorer](01_explorer.ipynb#An-explorer). "
        "The code is in [widgets.py](../peftlab/course/widgets.py).")]), course / "00_welcome.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 01 · Solutions")]),
                   course / "solutions" / "01_explorer_solutions.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 99 · Orphan solutions")]),
                   course / "solutions" / "99_gone_solutions.ipynb")

    site = tmp_path / "site"
    pages = build_site(course, site)
    assert [p.out for p in pages] == ["notebooks/00_welcome.html", "notebooks/01_explorer.html",
                                      "notebooks/solutions/01_explorer_solutions.html",
                                      "notebooks/solutions/99_gone_solutions.html"]
    index = _parse(site / "index.html")
    assert [h for c, h in index.links if c == "notebook"] == ["notebooks/00_welcome.html", "notebooks/01_explorer.html"]
    assert [h for c, h in index.links if c == "solutions"] == [
        "notebooks/solutions/01_explorer_solutions.html", "notebooks/solutions/99_gone_solutions.html"]

    welcome = _parse(site / "notebooks" / "00_welcome.html")
    hrefs = [h for _, h in welcome.links]
    assert "01_explorer.html#An-explorer" in hrefs                 # a notebook: its page
    assert "../../peftlab/course/widgets.py" in hrefs                     # a file: where it lies
    assert (site / "notebooks" / "../../peftlab/course/widgets.py").resolve().exists()
    assert "../index.html" in hrefs and "01_explorer.html" in hrefs   # the navigation bar
    explorer = (site / "notebooks" / "01_explorer.html").read_text()
    assert "solutions/01_explorer_solutions.html" in explorer and "r = 8" in explorer and NOTE in explorer

    (site / "extra.txt").write_text("rebuilt away")
    build_site(course, site)
    assert not (site / "extra.txt").exists() and (site / MARKER).exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a site built by peftlab.course.site"):
        build_site(course, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


@pytest.mark.slow
def test_the_course_site_has_a_page_for_every_notebook_and_fetches_nothing(tmp_path):
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    solutions = sorted((REPO / "notebooks" / "solutions").glob("*.ipynb"))
    site = tmp_path / "site"
    build_site(REPO / "notebooks", site)

    index = _parse(site / "index.html")
    linked = [h for c, h in index.links if c == "notebook"]
    assert linked == [f"notebooks/{p.stem}.html" for p in notebooks], "the index lists every notebook, in order"
    assert sorted(h for c, h in index.links if c == "solutions") == sorted(
        f"notebooks/solutions/{p.stem}.html" for p in solutions)
    pages = [site / h for _, h in index.links]
    assert all(p.is_file() for p in pages), [str(p) for p in pages if not p.is_file()]
    assert sorted(site.rglob("*.html")) == sorted({site / "index.html", *pages})

    for source, page in zip(notebooks, [site / h for c, h in index.links if c == "notebook"]):
        nb = nbformat.read(source, as_version=4)
        text = page.read_text(encoding="utf-8")
        title = describe(nb, source)[0]
        assert f"<title>{title}</title>" in text.replace("&#39;", "'").replace("&amp;", "&")
        if STATE_MIME in nb.metadata.get("widgets", {}):   # the stored widget state rides along
            assert f'<script type="{STATE_MIME}">' in text
        assert VIEW_MIME not in text.replace(f'type="{VIEW_MIME}"', ""), "every widget view is drawn statically"
    for page in [site / "index.html", *pages]:
        scripts = _parse(page).scripts
        assert not [s for s in scripts if re.match(r"^[a-z]+://", s)], f"{page.name} loads a script from the network"
        for src in scripts:   # MathJax, copied into the site
            assert (page.parent / src.split("?")[0]).resolve().is_file(), f"{page.name}: {src} is missing"
