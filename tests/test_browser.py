"""Every notebook of the course in JupyterLab in headless Chromium, its widgets used; the static
site (`make site`) opened from a file:// URL.

What a learner does, end to end. One JupyterLab server serves a temporary copy of notebooks/
(committed files are never touched) and one Debian Chromium (driven by Python Playwright, never a
downloaded browser) visits it, for the whole session. For each notebook in notebooks/ (found, not
listed: a new notebook is tested by itself; solutions are not run here): clear the outputs, run
`notebook:run-all-cells`, check that every code cell ran and none raised, that every widget the
committed notebook shows renders, and that moving any control of any interactive widget changes
what the widget shows (tests/widget_probe.py). A widget that renders but does nothing fails.

Needs /usr/bin/chromium (`sudo apt-get install chromium`). Skipped without it, except under
CI=true, where it fails. A screenshot and a report per notebook go to artifacts/browser/
(git-ignored), pass or fail.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from lab_page import (
    CLEAR_AND_RUN_ALL,
    KERNEL_READY,
    NOTEBOOK_STATE,
    RUN_FINISHED,
    TRACK_PENDING,
    WIDGET_TEXT_PROBLEMS,
)
from lab_server import LabServer
from widget_probe import TAG_CONTROLS, probe_widgets

from peftlab.course.widget_snapshot import interactive_views

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = REPO / "artifacts" / "browser"
KERNEL_READY_TIMEOUT_S = 120
RUN_ALL_TIMEOUT_S = 420  # the longest notebook takes about a minute on 2 cores; leave room for a busy box
WIDGET_TIMEOUT_S = 60

# Widgets that need more than "move one control and look", by notebook. "apply": the button the
# widget acts on (pressed after each move); "steps": arrow-key presses (negative: left arrow) for a
# slider whose single step to the right shows nothing.
SPECIAL: dict[str, dict] = {
    # The playground generates when "Generate" is pressed. At temperature 0.1 sampling still picks
    # the greedy tokens (1.0 differs), and the greedy answer "Lima ." stops at <eos> well before 12
    # new tokens, so more tokens change nothing: 1 token shows the slider works.
    "00_welcome": {"apply": "Generate", "steps": {"temperature": 10, "new tokens": -11}},
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _require(condition: bool, message: str) -> None:
    if condition:
        return
    if _in_ci():
        pytest.fail(message + " (CI=true: the browser test must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium():
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} not found; install it with `sudo apt-get install chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright Python package is missing: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def lab(chromium, tmp_path_factory):
    """One JupyterLab server for every notebook, on a copy of notebooks/ (and ../data, as in the repository)."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    if (REPO / "data").is_dir():
        (tmp / "data").symlink_to(REPO / "data", target_is_directory=True)
    work = tmp / "lab"
    work.mkdir()
    server = LabServer(root, work)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _report(path: Path, lines: list[str]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_jupyterlab_and_its_widgets_respond(lab: LabServer, chromium, notebook: Path):
    from playwright.sync_api import Error as PlaywrightError

    rel = notebook.name
    expected_views = interactive_views(nbformat.read(notebook, as_version=4))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"{notebook.stem}.png"
    screenshot.unlink(missing_ok=True)
    console: list[str] = []
    lines = [f"{rel}"]

    def fail(message: str):
        _report(ARTIFACTS / f"{notebook.stem}.txt", lines + [f"FAILED: {message}"])
        pytest.fail(
            f"{message}\n\nbrowser console (tail):\n" + "\n".join(console[-30:])
            + f"\n\n{lab.log_tail()}\nscreenshot: {screenshot}",
            pytrace=False,
        )

    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
        page.goto(lab.url_for(rel), wait_until="domcontentloaded", timeout=60_000)
        try:
            page.wait_for_function(KERNEL_READY, arg=rel, timeout=KERNEL_READY_TIMEOUT_S * 1000, polling=500)
        except PlaywrightError:
            fail(f"{rel} did not open with an idle, connected kernel in {KERNEL_READY_TIMEOUT_S} s")

        stale = page.evaluate(CLEAR_AND_RUN_ALL, rel)
        assert stale == 0, f"{stale} cells kept an execution count after clearing outputs"
        started = time.monotonic()
        try:
            page.wait_for_function(RUN_FINISHED, arg=rel, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
        except PlaywrightError:
            fail(f"run-all did not finish in {RUN_ALL_TIMEOUT_S} s: {page.evaluate(NOTEBOOK_STATE, rel)}")
        run_s = time.monotonic() - started
        state = page.evaluate(NOTEBOOK_STATE, rel)
        lines.append(f"run-all: {run_s:.1f} s, {len(state['counts'])} code cells")
        if state["errors"]:
            fail(f"cells raised errors: {state['errors']}")
        if state["unrun"] or state["runAll"].get("error"):
            fail(f"not every code cell ran: {state}")
        expected = list(range(1, len(state["counts"]) + 1))
        assert state["counts"] == expected, f"execution counts {state['counts']}, expected {expected}"

        # Every widget the committed notebook shows renders, and nothing is stuck or broken.
        deadline = time.monotonic() + WIDGET_TIMEOUT_S
        while True:
            problems = page.evaluate(WIDGET_TEXT_PROBLEMS)
            rendered = len(page.evaluate(TAG_CONTROLS))
            if (rendered >= expected_views and not problems["loading"]) or time.monotonic() > deadline:
                break
            time.sleep(1)
        if problems["error"]:
            fail(f"a widget failed to display: {problems['error']}")
        if problems["loading"]:
            fail(f"a widget still shows 'Loading widget...' after {WIDGET_TIMEOUT_S} s")
        if rendered < expected_views:
            fail(f"{rendered} interactive widget(s) rendered; the committed notebook shows {expected_views}")

        started = time.monotonic()
        page.evaluate(TRACK_PENDING, rel)
        probes = probe_widgets(page, SPECIAL.get(notebook.stem, {}))
        lines.append(f"widgets: {rendered} interactive view(s), {len(probes)} control(s) moved "
                     f"in {time.monotonic() - started:.1f} s")
        lines += [f"  {p}" for p in probes]
        page.screenshot(path=str(screenshot), full_page=False)
        dead = [str(p) for p in probes if p.changed is False]
        if dead:
            fail("moving these controls did not change what their widget shows:\n  " + "\n  ".join(dead))
        _report(ARTIFACTS / f"{notebook.stem}.txt", lines)
    finally:
        if not screenshot.exists():
            try:
                page.screenshot(path=str(screenshot))
            except PlaywrightError:
                pass
        page.close()
        lab.shutdown_kernels()   # the next notebook gets both cores


def test_the_course_site_opens_from_a_file_url_and_fetches_nothing(chromium, tmp_path):
    """`make site` in a browser: the index lists every notebook, its first link opens the notebook's
    page, the navigation bar leads on, MathJax typesets from the site's own copy, images decode, and
    no request leaves file://."""
    from peftlab.course.site import build_site

    pages = build_site(REPO / "notebooks", tmp_path / "site")
    outside: list[str] = []

    def only_local(route):
        if route.request.url.startswith(("file:", "data:", "about:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.route("**/*", only_local)
        page.goto((tmp_path / "site" / "index.html").as_uri())
        links = page.locator("a.notebook")
        assert links.count() == len(NOTEBOOKS)
        first = pages[0]
        assert links.first.inner_text() == first.title
        links.first.click()
        page.wait_for_load_state("load")
        assert page.url == (tmp_path / "site" / first.out).as_uri()
        assert page.title() == first.title
        assert page.locator(".jp-Cell").count() > 0

        page.locator("nav").first.locator("a", has_text="→").click()   # the navigation bar's "next"
        page.wait_for_load_state("load")
        assert page.title() == pages[1].title

        # A page with formulas: MathJax typesets them from the site's own copy.
        with_math = next(p for p in pages if any(
            c.cell_type == "markdown" and "$" in c.source for c in nbformat.read(p.source, as_version=4).cells))
        page.goto((tmp_path / "site" / with_math.out).as_uri())
        page.wait_for_function("() => document.querySelectorAll('.MathJax, .MathJax_Display').length > 0",
                               timeout=30_000)
        assert page.locator(".MathJax_Error, .merror").count() == 0
        broken = page.evaluate("() => Array.from(document.images).filter(i => !i.complete || !i.naturalWidth).length")
        assert broken == 0, f"{broken} image(s) did not load on {page.url}"
    finally:
        page.screenshot(path=str(ARTIFACTS / "site.png"))
        page.close()
    assert not outside, f"the site asked the network for {outside}"
