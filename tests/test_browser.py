"""Open a notebook in JupyterLab in headless Chromium, run every cell, and check widgets render.

What a learner does, end to end: JupyterLab serves a temporary copy of notebooks/ (committed files
are never touched), Debian's Chromium (driven by Python Playwright, never a downloaded browser)
opens NOTEBOOK, clears its outputs, runs `notebook:run-all-cells`, and the test checks that every
code cell ran, that no cell raised, and that at least one ipywidget rendered.

Needs /usr/bin/chromium (`sudo apt-get install chromium`). Skipped without it, except under
CI=true, where it fails. A screenshot goes to artifacts/ (git-ignored), pass or fail.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The notebook to run. Its whole folder is copied to a temporary root served by JupyterLab.
NOTEBOOK = REPO / "notebooks" / "00_welcome.ipynb"
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
ARTIFACTS = REPO / "artifacts"
SERVER_START_TIMEOUT_S = 120
KERNEL_READY_TIMEOUT_S = 120
RUN_ALL_TIMEOUT_S = 360  # the notebook takes about a minute on 2 cores; leave room for a busy box
WIDGET_TIMEOUT_S = 60

# Controls a learner interacts with; tqdm progress bars alone do not count.
INTERACTIVE_WIDGETS = ", ".join(
    f".jp-OutputArea-output .jupyter-widgets.{cls}"
    for cls in (
        "widget-slider", "widget-text", "widget-textarea", "widget-button", "widget-dropdown",
        "widget-toggle-buttons", "widget-checkbox", "widget-play", "widget-radio",
    )
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _require(condition: bool, message: str) -> None:
    if condition:
        return
    if _in_ci():
        pytest.fail(message + " (CI=true: the browser test must run)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings_dir: Path) -> None:
    """Lab user settings for the test: render every cell (no windowing, so every output is in
    the DOM) and never fetch news or updates."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for rel, content in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


class LabServer:
    """A JupyterLab server on 127.0.0.1 with a random token, serving a temporary folder."""

    def __init__(self, root_dir: Path, work_dir: Path):
        self.root_dir = root_dir
        self.work_dir = work_dir
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        settings = self.work_dir / "settings"
        _write_settings(settings)
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.work_dir / "config"),
            JUPYTER_RUNTIME_DIR=str(self.work_dir / "runtime"),
            # this environment's kernels first, ahead of any user-level `python3` kernelspec
            JUPYTER_PATH=os.pathsep.join(
                [str(Path(sys.prefix) / "share" / "jupyter")]
                + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
            ),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.open_browser=False",
            "--expose-app-in-browser",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.work_dir / 'workspaces'}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=self.work_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                if self._request("GET", "/api/status", timeout=5) == 200:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer in {SERVER_START_TIMEOUT_S} s\n{self.log_tail()}")

    def _request(self, method: str, path: str, timeout: float) -> int:
        req = urllib.request.Request(
            self.base_url + path, method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then make sure it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self._request("POST", "/api/shutdown", timeout=10)
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            pass
        self.proc.terminate()  # SIGTERM to the server we started, by its pid
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no JupyterLab log)"
        return "JupyterLab log (tail):\n" + "\n".join(lines[-n:])

    def url_for(self, rel_path: str) -> str:
        return (
            f"{self.base_url}/lab/tree/{urllib.parse.quote(rel_path)}"
            f"?token={self.token}&reset"  # `reset`: start from an empty workspace
        )


@pytest.fixture
def lab(tmp_path):
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} not found; install it with `sudo apt-get install chromium`")
    _require(NOTEBOOK.exists(), f"{NOTEBOOK} does not exist yet")
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK.parent, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    if (REPO / "data").is_dir():  # notebooks may refer to ../data, as in the repository
        (tmp_path / "data").symlink_to(REPO / "data", target_is_directory=True)
    work = tmp_path / "lab"
    work.mkdir()
    server = LabServer(root, work)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- in-page JavaScript

_FIND_PANEL = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  for (const w of Array.from(app.shell.widgets('main'))) {
    if (w.context && w.context.path === path && w.content && w.sessionContext) return w;
  }
  return null;
}
"""

_KERNEL_READY = f"""
(path) => {{
  const panel = ({_FIND_PANEL})(path);
  if (!panel || !panel.context.isReady) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
}}
"""

_CLEAR_AND_RUN_ALL = f"""
async (path) => {{
  const app = window.jupyterapp;
  const panel = ({_FIND_PANEL})(path);
  app.shell.activateById(panel.id);
  await panel.sessionContext.ready;
  await app.commands.execute('notebook:clear-all-cell-outputs');
  const stale = Array.from(panel.content.model.cells)
    .filter(c => c.type === 'code' && c.executionCount != null).length;
  window.__peftlabRunAll = {{done: false, result: null, error: null}};
  app.commands.execute('notebook:run-all-cells')
    .then(r => {{ window.__peftlabRunAll.result = r; }})
    .catch(e => {{ window.__peftlabRunAll.error = String(e); }})
    .finally(() => {{ window.__peftlabRunAll.done = true; }});
  return stale;
}}
"""

_RUN_FINISHED = f"""
(path) => {{
  const panel = ({_FIND_PANEL})(path);
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!(window.__peftlabRunAll && window.__peftlabRunAll.done && kernel && kernel.status === 'idle');
}}
"""

_NOTEBOOK_STATE = f"""
(path) => {{
  const panel = ({_FIND_PANEL})(path);
  const cells = Array.from(panel.content.model.cells);
  const code = [], errors = [], unrun = [];
  cells.forEach((c, i) => {{
    if (c.type !== 'code') return;
    const source = c.sharedModel.getSource();
    if (!source.trim()) return;
    code.push(c.executionCount);
    if (c.executionCount == null) unrun.push(i);
    for (const o of c.outputs.toJSON()) {{
      if (o.output_type === 'error') errors.push({{cell: i, ename: o.ename, evalue: o.evalue}});
    }}
  }});
  return {{counts: code, unrun, errors, runAll: window.__peftlabRunAll,
           kernel: panel.sessionContext.session.kernel.status}};
}}
"""

_WIDGET_TEXT_PROBLEMS = """
() => {
  const text = Array.from(document.querySelectorAll('.jp-OutputArea'))
    .map(e => e.textContent).join('\\n');
  return {loading: text.includes('Loading widget...'),
          error: (text.match(/Error displaying widget[^\\n]*/) || [null])[0]};
}
"""


def test_notebook_runs_in_jupyterlab_and_widgets_render(lab: LabServer):
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright Python package is missing: pip install -e '.[test]'")

    rel = NOTEBOOK.name
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / f"browser_{NOTEBOOK.stem}.png"
    screenshot.unlink(missing_ok=True)
    console: list[str] = []

    def fail(message: str):
        pytest.fail(
            f"{message}\n\nbrowser console (tail):\n" + "\n".join(console[-30:])
            + f"\n\n{lab.log_tail()}\nscreenshot: {screenshot}",
            pytrace=False,
        )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
            page.goto(lab.url_for(rel), wait_until="domcontentloaded", timeout=60_000)
            try:
                page.wait_for_function(
                    _KERNEL_READY, arg=rel, timeout=KERNEL_READY_TIMEOUT_S * 1000, polling=500
                )
            except PlaywrightError:
                fail(f"{rel} did not open with an idle, connected kernel in {KERNEL_READY_TIMEOUT_S} s")

            stale = page.evaluate(_CLEAR_AND_RUN_ALL, rel)
            assert stale == 0, f"{stale} cells kept an execution count after clearing outputs"
            started = time.monotonic()
            try:
                page.wait_for_function(
                    _RUN_FINISHED, arg=rel, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000
                )
            except PlaywrightError:
                state = page.evaluate(_NOTEBOOK_STATE, rel)
                fail(f"run-all did not finish in {RUN_ALL_TIMEOUT_S} s: {state}")
            elapsed = time.monotonic() - started
            state = page.evaluate(_NOTEBOOK_STATE, rel)
            print(f"\n{rel}: run-all took {elapsed:.1f} s; execution counts {state['counts']}")

            if state["errors"]:
                fail(f"cells raised errors: {state['errors']}")
            if state["unrun"] or state["runAll"].get("error"):
                fail(f"not every code cell ran: {state}")
            expected = list(range(1, len(state["counts"]) + 1))
            assert state["counts"] == expected, f"execution counts {state['counts']}, expected {expected}"

            # Widgets: at least one interactive control is visible and nothing is stuck or broken.
            controls = page.locator(INTERACTIVE_WIDGETS)
            try:
                controls.first.wait_for(state="visible", timeout=WIDGET_TIMEOUT_S * 1000)
            except PlaywrightError:
                fail(f"no interactive ipywidget became visible in {WIDGET_TIMEOUT_S} s")
            deadline = time.monotonic() + WIDGET_TIMEOUT_S
            problems = page.evaluate(_WIDGET_TEXT_PROBLEMS)
            while problems["loading"] and time.monotonic() < deadline:
                time.sleep(1)
                problems = page.evaluate(_WIDGET_TEXT_PROBLEMS)
            controls.first.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot))
            if problems["error"]:
                fail(f"a widget failed to display: {problems['error']}")
            if problems["loading"]:
                fail(f"a widget still shows 'Loading widget...' after {WIDGET_TIMEOUT_S} s")
            print(f"{controls.count()} interactive widget(s) rendered; screenshot {screenshot}")
        finally:
            if page is not None and not screenshot.exists():
                try:
                    page.screenshot(path=str(screenshot))
                except PlaywrightError:
                    pass
            browser.close()
