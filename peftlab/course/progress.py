"""The learner's progress: every checker's latest verdict, kept in one small JSON file on the learner's
machine, outside the repository (no account, no network).

    ~/.peftlab/progress.json, or the file named by the environment variable PEFTLAB_PROGRESS

Each entry is keyed "NN_name/check_x" (the notebook and its checker) and holds the exercise's title,
whether its latest verdict passed, and when. An untouched stub ("not attempted yet") records nothing,
so re-running a fresh copy of a notebook does not undo what was done; a wrong answer after a right one
does (the file says where the learner stands now).
Deleting the file starts again from nothing. A file that cannot be read as progress is renamed aside
(`progress.json.corrupt-<time>`), said so on stderr, and progress starts again: a checker never fails
because of it. Two kernels may check at once: every change is a read-modify-write under a lock file,
and the new content replaces the old in one atomic rename, so a reader sees the old file or the new
one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

try:   # POSIX; on Windows the atomic rename alone keeps the file whole (a rare lost update remains)
    import fcntl
except ImportError:   # pragma: no cover - Windows
    fcntl = None

ENV = "PEFTLAB_PROGRESS"
VERSION = 1
_paused = False
_warned = False


def location() -> Path:
    """The progress file: $PEFTLAB_PROGRESS, else ~/.peftlab/progress.json."""
    value = os.environ.get(ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".peftlab" / "progress.json"


@contextlib.contextmanager
def paused():
    """Check without recording (the graded edition runs checkers whose verdict the learner must not see)."""
    global _paused
    before, _paused = _paused, True
    try:
        yield
    finally:
        _paused = before


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield   # the lock goes with the file's closing


def _set_aside(path: Path, reason: str) -> None:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    os.replace(path, aside)
    print(f"peftlab: the progress file {path} could not be read ({reason}); it was renamed to {aside.name} "
          "and progress starts again from here.", file=sys.stderr)


def _valid(data) -> bool:
    return (isinstance(data, dict) and data.get("version") == VERSION and isinstance(data.get("exercises"), dict)
            and all(isinstance(e, dict) and isinstance(e.get("passed"), bool) for e in data["exercises"].values()))


def _read(path: Path) -> dict[str, dict]:
    """The entries, {} without a file; an unreadable file is set aside (call under the lock)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        _set_aside(path, f"not JSON: {error}")
        return {}
    if not _valid(data):
        _set_aside(path, f"not a peftlab progress file of version {VERSION}")
        return {}
    return data["exercises"]


def _write(path: Path, entries: dict[str, dict]) -> None:
    text = json.dumps({"version": VERSION, "exercises": entries}, indent=1, ensure_ascii=False, sort_keys=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load(path: Path | None = None) -> dict[str, dict]:
    """Every recorded exercise, {"NN_name/check_x": entry}; {} when nothing is recorded yet."""
    path = path or location()
    if not path.exists():
        return {}
    with _locked(path):
        return _read(path)


def record(notebook: str, exercise: str, title: str, passed: bool, path: Path | None = None) -> None:
    """Store one verdict. Never raises: progress that cannot be saved is said once on stderr."""
    global _warned
    if _paused:
        return
    path = path or location()
    try:
        with _locked(path):
            entries = _read(path)
            entries[f"{notebook}/{exercise}"] = {"notebook": notebook, "exercise": exercise, "title": title,
                                                 "passed": bool(passed),
                                                 "time": datetime.now().isoformat(timespec="seconds")}
            _write(path, entries)
    except OSError as error:
        if not _warned:
            _warned = True
            print(f"peftlab: progress not saved to {path} ({error}); set {ENV} to a file you can write.",
                  file=sys.stderr)
