"""The learner's progress, notebook by notebook: each exercise done, attempted or not started.

    python -m peftlab.course progress

The exercises are the checkers themselves: every `check_*` function of the modules
peftlab/course/exercises/nbNN_*.py, titled by its docstring's first sentence (which opens with its level,
🌱 🌿 or 🌳). A new notebook's checkers appear by themselves. What the learner did comes from the
progress file (peftlab.course.progress): done = the latest verdict passed, attempted = checked but not
passed, not started = never checked past its stub.
"""
from __future__ import annotations

import html
import importlib
import pkgutil
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from peftlab.course import progress

STATES = ("done", "attempted", "not started")
WHERE = (f"Kept in ~/.peftlab/progress.json, or in the file ${progress.ENV} names; "
         "delete it to start again.")
MARKS = {"done": "\u2705", "attempted": "\u274c", "not started": "\u00b7"}


@dataclass(frozen=True)
class Exercise:
    notebook: str    # "05_lora_variants", the notebook's file name without .ipynb
    checker: str     # "check_dora_sign"
    title: str       # the docstring's first sentence: "🌿 (predict, then run) On a sixth seed, ..."


def _title(doc: str, most: int = 110) -> str:
    """The docstring's first sentence on one line, cut short if it is long."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    ends = [i for i in (text.find(". "), text.find("? ")) if i > 0]
    text = text[:min(ends) + 1] if ends else text
    return text if len(text) <= most else text[:most - 1].rstrip() + "\u2026"


def catalogue() -> list[Exercise]:
    """Every exercise of the course, in notebook order and, inside a notebook, in checker order."""
    from peftlab.course import exercises
    found = []
    for info in sorted(pkgutil.iter_modules(exercises.__path__), key=lambda m: m.name):
        if not re.fullmatch(r"nb\d+_\w+", info.name):
            continue
        module = importlib.import_module(f"{exercises.__name__}.{info.name}")
        for name, fn in vars(module).items():
            if name.startswith("check_") and callable(fn) and getattr(fn, "__module__", None) == module.__name__:
                found.append(Exercise(info.name.removeprefix("nb"), name, _title(fn.__doc__ or name)))
    return found


def states(entries: dict[str, dict], exercises: list[Exercise]) -> dict[Exercise, str]:
    """Each exercise's state, from the progress file's entries."""
    def state(e: Exercise) -> str:
        entry = entries.get(f"{e.notebook}/{e.checker}")
        return "not started" if entry is None else "done" if entry["passed"] else "attempted"
    return {e: state(e) for e in exercises}


def by_notebook(found: dict[Exercise, str]) -> dict[str, dict[str, int]]:
    """{notebook: {state: how many exercises}}, notebooks in order."""
    counts: dict[str, dict[str, int]] = {}
    for exercise, state in found.items():
        counts.setdefault(exercise.notebook, dict.fromkeys(STATES, 0))[state] += 1
    return dict(sorted(counts.items()))


def table(found: dict[Exercise, str], detail: bool = True) -> str:
    """The plain-text view: one row of counts per notebook, each followed by its exercises."""
    counts = by_notebook(found)
    width = max([len(n) for n in counts] + [8])
    lines = [f"{'notebook':<{width}}  {'done':>4}  {'attempted':>9}  {'not started':>11}"]
    for notebook, n in counts.items():
        lines.append(f"{notebook:<{width}}  {n['done']:>4}  {n['attempted']:>9}  {n['not started']:>11}")
        if detail:
            lines += [f"  {MARKS[s]} {e.title}" for e, s in found.items() if e.notebook == notebook]
    total = {s: sum(n[s] for n in counts.values()) for s in STATES}
    lines.append(f"{'all':<{width}}  {total['done']:>4}  {total['attempted']:>9}  {total['not started']:>11}")
    return "\n".join(lines)


def html_table(found: dict[Exercise, str]) -> str:
    """The same counts as an HTML table, a bar per notebook."""
    rows = []
    for notebook, n in by_notebook(found).items():
        total = sum(n.values())
        bar = (f'<div style="width:120px;height:10px;background:#eee">'
               f'<div style="width:{120 * n["done"] // total}px;height:10px;background:#2e7d32"></div></div>')
        rows.append(f"<tr><td>{html.escape(notebook)}</td><td>{n['done']}</td><td>{n['attempted']}</td>"
                    f"<td>{n['not started']}</td><td>{bar}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("notebook", *STATES, ""))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def current(path: Path | None = None) -> dict[Exercise, str]:
    return states(progress.load(path), catalogue())


def progress_widget(path: Path | None = None):
    """The table with a Refresh button, for a notebook (notebook 00 ends with it). Until the first click the
    widget holds nothing that changes from run to run, so a notebook stores it as a fresh learner sees it."""
    import ipywidgets as widgets

    class ProgressView(widgets.VBox):
        def _repr_mimebundle_(self, **kwargs):
            # the text beside the widget (what a page without a kernel shows) is the table, not a repr
            bundle = super()._repr_mimebundle_(**kwargs)
            bundle["text/plain"] = table(current(path), detail=False)
            return bundle

    shown = widgets.HTML()
    note = widgets.HTML(f"<small>{html.escape(WHERE)}</small>")   # not the resolved path: no machine paths in outputs
    when = widgets.Label()
    button = widgets.Button(description="Refresh", icon="refresh")

    def refresh(_=None, clicked=False):
        shown.value = html_table(current(path))
        if clicked:
            when.value = f"refreshed at {datetime.now():%H:%M:%S}"

    button.on_click(lambda b: refresh(clicked=True))
    refresh()
    return ProgressView([shown, widgets.HBox([button, when]), note])
