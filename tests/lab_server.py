"""A JupyterLab server for the browser test: 127.0.0.1, a random token, a temporary folder.

Its settings render every cell (no windowing, so every output is in the DOM) and never fetch news
or updates; its kernels come from this environment first.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

SERVER_START_TIMEOUT_S = 120


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
        return self._call(method, path, timeout)[0]

    def _call(self, method: str, path: str, timeout: float) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.base_url + path, method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()

    def shutdown_kernels(self) -> None:
        """End every session and its kernel, so the next notebook has both cores to itself."""
        for session in json.loads(self._call("GET", "/api/sessions", timeout=10)[1]):
            try:
                self._call("DELETE", f"/api/sessions/{session['id']}", timeout=30)
            except urllib.error.HTTPError as e:
                if e.code != 404:   # already gone
                    raise

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
