"""The graded edition: an nbgrader course root built from the committed notebooks and their solutions.

    python -m peftlab.course assignments --out assignments     (or `make assignments`)

writes `nbgrader_config.py` and `source/NN_name/NN_name.ipynb` for every notebook in notebooks/.
nbgrader itself (the optional `course` extra) then releases, collects and grades them; docs/INSTRUCTORS.md
says how. In each source notebook (exercises found and paired by peftlab.course.exercise_pairs):

- the exercise's stub cell becomes a solution cell: the stub as the learner knows it, then the
  reference code between ### BEGIN SOLUTION and ### END SOLUTION. A release keeps the stub and
  replaces the reference by a comment, so an untouched release still runs from top to bottom;
- its check call becomes an autograded test cell worth POINTS[level]. The visible part runs the
  checker (its line is the learner's feedback and never raises); the assertion on the verdict sits
  between ### BEGIN HIDDEN TESTS and ### END HIDDEN TESTS, so it is only there when nbgrader grades:
  a learner's "Run all" is never stopped by an exercise they have not done yet;
- a prediction judged against the learner's own measurement (Pair.kind "judged") becomes two test
  cells, half the points each: the measurement (the checker runs without printing its line, which
  would give the outcome away, and says only whether the measurement is accepted) and the prediction
  (hidden). A prediction or diagnosis graded whole ("sealed") is one such cell, the answer's receipt
  visible and its grade hidden;
- every other cell is read-only: nbgrader puts back its original text before grading.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat

from peftlab.course.checker_source import LEVELS, PairingError
from peftlab.course.exercise_pairs import Pair, find_stubs, pair

POINTS = {"🌱": 2, "🌿": 4, "🌳": 6}
CODE_STUB = "# YOUR ANSWER HERE: fill in the stub above (or write your code here)"
CONFIG = '''"""nbgrader settings of the peftlab course (written by `python -m peftlab.course assignments`)."""
c = get_config()  # noqa: F821 - nbgrader defines it
c.CourseDirectory.course_id = "peftlab"
# A release keeps each exercise's stub, which runs; the reference code becomes this comment.
c.ClearSolutions.code_stub = {{"python": {stub!r}}}
# Notebooks train small models: a cell may take minutes on a busy laptop (nbgrader's default is 30 s).
c.Execute.timeout = {timeout}
'''


def notebook_pairs(notebooks: Path) -> list[tuple[Path, Path]]:
    """(notebook, its solutions notebook) for every NN_name.ipynb in `notebooks`, in name order."""
    found = []
    for path in sorted(notebooks.glob("[0-9]*.ipynb")):
        solutions = notebooks / "solutions" / f"{path.stem}_solutions.ipynb"
        found.append((path, solutions))
    if not found:
        raise PairingError(f"no notebooks (NN_name.ipynb) in {notebooks}")
    return found


def read_pairs(path: Path, solutions: Path) -> list[Pair]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    if not solutions.exists():
        if find_stubs(nb, path.name):
            raise PairingError(f"{path.name} has exercises but no solutions notebook {solutions}")
        return []
    return pair(nb, json.loads(solutions.read_text(encoding="utf-8")), path.name)


def parts(p: Pair) -> list[tuple[str, str, int]]:
    """The test cells of one exercise: (grade id, source, points)."""
    c, points = p.checker, POINTS[p.checker.level]
    short = c.name.removeprefix("check_")
    label = f"{c.level} {LEVELS[c.level]}"
    if p.kind == "plain":
        return [(f"{c.name}-test", f"# {label}: {points} points\n"
                 f"verdict_{short} = {p.function}{p.arguments}\n"
                 "### BEGIN HIDDEN TESTS\n"
                 f"assert verdict_{short}.ok, \"not passed yet: the checker's line says why\"\n"
                 "### END HIDDEN TESTS", points)]
    helper = "measurement" if p.kind == "judged" else "sealed"
    inner = p.arguments[1:-1].strip()
    call = f"grading.{helper}({p.function}{', ' + inner if inner else ''})"
    if p.kind == "sealed":
        return [(f"{c.name}-test", f"# {label}: {points} points, graded when your work is collected (the "
                 "checker's line would give the answer away)\n"
                 "from peftlab.course import grading\n\n"
                 f"outcome_{short} = {call}\n"
                 "### BEGIN HIDDEN TESTS\n"
                 f"assert outcome_{short}.passed\n"
                 "### END HIDDEN TESTS", points)]
    half = points // 2
    return [(f"{c.name}-measurement", f"# {label}, the measurement: {half} of {points} points\n"
             "from peftlab.course import grading\n\n"
             f"outcome_{short} = {call}\n"
             "### BEGIN HIDDEN TESTS\n"
             f"assert outcome_{short}.measured\n"
             "### END HIDDEN TESTS", half),
            (f"{c.name}-prediction", f"# {label}, the prediction: {points - half} of {points} points, graded when "
             "your work is collected\n"
             "### BEGIN HIDDEN TESTS\n"
             f"assert outcome_{short}.passed\n"
             "### END HIDDEN TESTS", points - half)]


def exercise_points(p: Pair) -> int:
    return sum(points for _, _, points in parts(p))


def _metadata(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def answer_cell(p: Pair) -> str:
    reference = "\n".join(p.setup + ([""] if p.setup else []) + [p.reference])
    return (f"{p.stub}\n" if p.stub else "") + f"### BEGIN SOLUTION\n{reference}\n### END SOLUTION"


def source_notebook(nb: dict, pairs: list[Pair]) -> nbformat.NotebookNode:
    """The notebook as an nbgrader source: outputs cleared, exercises graded, everything else read-only."""
    by_cell = {p.cell: p for p in pairs}
    cells = []
    for i, cell in enumerate(nb["cells"]):
        p = by_cell.get(i)
        if p is None:
            copy = nbformat.from_dict(cell)
            copy.metadata = {**copy.get("metadata", {}), **_metadata(f"locked-{i}", locked=True)}
            if copy.cell_type == "code":
                copy.outputs, copy.execution_count = [], None
            cells.append(copy)
            continue
        answer = nbformat.v4.new_code_cell(answer_cell(p), metadata=_metadata(f"{p.checker.name}-answer",
                                                                               solution=True))
        answer.id = f"{p.checker.name}-answer".replace("_", "-")
        cells.append(answer)
        for grade_id, source, points in parts(p):
            test = nbformat.v4.new_code_cell(source, metadata=_metadata(grade_id, grade=True, locked=True,
                                                                          points=points))
            test.id = grade_id.replace("_", "-")
            cells.append(test)
    metadata = {k: v for k, v in nb.get("metadata", {}).items() if k != "widgets"}
    out = nbformat.v4.new_notebook(cells=cells, metadata=metadata)
    out.nbformat, out.nbformat_minor = nb.get("nbformat", 4), max(nb.get("nbformat_minor", 5), 5)
    return out


def build(notebooks: Path, out: Path, timeout: int = 600) -> dict[str, list[Pair]]:
    """Write the course root; returns {assignment name: its exercises}. Nothing but nbgrader_config.py and
    source/ is touched, so a gradebook, releases and submissions already in `out` stay."""
    built = {}
    for path, solutions in notebook_pairs(notebooks):
        pairs = read_pairs(path, solutions)
        folder = out / "source" / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        nb = json.loads(path.read_text(encoding="utf-8"))
        nbformat.write(source_notebook(nb, pairs), folder / path.name)
        built[path.stem] = pairs
    (out / "nbgrader_config.py").write_text(CONFIG.format(stub=CODE_STUB, timeout=timeout), encoding="utf-8")
    return built


def points_table(built: dict[str, list[Pair]]) -> str:
    """The Markdown table of docs/INSTRUCTORS.md: exercises and points per notebook."""
    lines = ["| notebook | exercises (🌱 / 🌿 / 🌳) | predictions and diagnoses | points |", "|---|---|---|---|"]
    for name, pairs in built.items():
        levels = " / ".join(str(sum(p.checker.level == mark for p in pairs)) for mark in POINTS)
        predictions = sum(p.kind != "plain" for p in pairs)
        lines.append(f"| {name} | {levels} | {predictions} | {sum(map(exercise_points, pairs))} |")
    total = sum(exercise_points(p) for pairs in built.values() for p in pairs)
    count = sum(len(pairs) for pairs in built.values())
    lines.append(f"| all | {count} exercises | {sum(p.kind != 'plain' for v in built.values() for p in v)} "
                 f"| {total} |")
    return "\n".join(lines)
