"""Repository-wide pytest hooks.

Loaded for `pytest tests/` and for `pytest --nbval-lax notebooks/` alike (this file sits in the
rootdir). Two jobs, both only active for notebooks collected by nbval:

1. Never compare stderr. nbval 0.11 turns every stream output into a dict keyed by the stream's
   name ({"output_type": "stream", "stderr": text}) before comparing, and its skip list
   (`IPyNbFile.skip_compare`) holds "name" and "output_type" but not "stderr". So in a
   `# NBVAL_CHECK_OUTPUT` cell a tqdm bar or a warning on stderr would be compared, and a warning
   that appears only sometimes fails as "Missing/Unexpected output fields". nbval has no option
   for this; adding "stderr" to each notebook's skip list removes stderr from both sides of the
   comparison. stdout, results and displays in checked cells are still compared.
2. Print how long each notebook took (kernel start + every cell), because nbval reports one
   test per cell.

And for every run: checkers record verdicts in a progress file (peftlab.course.progress), by default
in the user's home. A test session, and every kernel it starts (nbval, the browser test, nbgrader),
writes to a file of its own in a temporary folder instead, unless PEFTLAB_PROGRESS is already set.
"""
from __future__ import annotations

import os
import tempfile
from collections import defaultdict

_IGNORED_OUTPUT_KEYS = ("stderr",)
_notebook_seconds: dict[str, float] = defaultdict(float)


def pytest_configure(config):
    if not os.environ.get("PEFTLAB_PROGRESS"):
        os.environ["PEFTLAB_PROGRESS"] = os.path.join(tempfile.mkdtemp(prefix="peftlab-progress-"), "progress.json")


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        parent = getattr(item, "parent", None)
        skip = getattr(parent, "skip_compare", None)
        if isinstance(skip, tuple):
            missing = tuple(k for k in _IGNORED_OUTPUT_KEYS if k not in skip)
            if missing:
                parent.skip_compare = skip + missing


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook wall time (kernel start + all cells)")
    width = max(len(p) for p in _notebook_seconds)
    for path, seconds in sorted(_notebook_seconds.items()):
        flag = "   <-- over the 90 s bar" if seconds > 90 else ""
        tr.write_line(f"{path:<{width}}  {seconds:7.1f} s{flag}")
    tr.write_line(f"{'total':<{width}}  {sum(_notebook_seconds.values()):7.1f} s")
