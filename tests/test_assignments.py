"""The graded edition (peftlab.course.assignments): an nbgrader course root built from the notebooks.

Fast, in the unit run: how the generator classifies, scores, marks and locks cells (on small notebooks
written here, calling real checkers), that it fails loudly where an exercise has no solution, that every
committed notebook pairs with its solutions, that nbgrader's generate_assignment accepts every source
and its release holds neither reference code nor hidden tests, and that docs/INSTRUCTORS.md's points
table is the generator's.

Slow, under the `assignments` marker (`make test-assignments`): nbgrader's autograde executes the
reference submission (the source notebook, solutions in place) of every notebook and must give full
marks; for BLANK notebooks (one of each kind of test cell, and the two whose exercises sit in the
middle of the notebook) it also grades the untouched release, which must score zero, run every cell,
and fail nowhere but in the hidden tests.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from peftlab.course.assignments import CODE_STUB, POINTS, build, exercise_points, points_table, source_notebook
from peftlab.course.checker_source import PairingError
from peftlab.course.exercise_pairs import pair

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = [p.stem for p in sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))]
# 00: three predictions judged whole (sealed); 02: two sealed, two written functions; 03: a judged
# prediction in the middle of the notebook; 14: a judged prediction with a function after it; 15:
# every exercise in the middle of the notebook.
BLANK = ["00_welcome", "02_lora_from_scratch", "03_lora_on_a_transformer", "14_graduation",
         "15_peft_for_images"]
HIDDEN = re.compile(r"BEGIN HIDDEN TESTS|END HIDDEN TESTS|\.ok,|\.measured$|\.passed$", re.MULTILINE)


def notebook(*cells) -> dict:
    """An in-memory notebook: strings starting with '#md ' are Markdown cells, the rest code."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell(c[4:]) if c.startswith("#md ") else nbformat.v4.new_code_cell(c)
                for c in cells]
    return json.loads(nbformat.writes(nb))


SETUP = "from peftlab.course.exercises import nb05_lora_variants as exercises\nimport torch"
MAIN = notebook(
    "#md # 05 a shortened copy",
    SETUP,
    "#md 🌱 **Warm-up.** VeRA's parameters.",
    "vera_1024_parameters = None\n\nexercises.check_vera_parameters(vera_1024_parameters)",
    "#md 🌿 **Predict, then run.**",
    "prediction_dora = None\nmeasured_pair = None\n\nexercises.check_dora_sign(prediction_dora, measured_pair)",
    "#md ## Summary",
)
SOLUTIONS = notebook(
    "#md # solutions",
    "# NBVAL_IGNORE_OUTPUT\nfrom peftlab.course.exercises import nb05_lora_variants as exercises\n"
    "from peftlab.workbook import parameter_counts, setup_notebook\nimport math\n\nsetup_notebook(seed=0)\nlayers = 4",
    "vera_1024_parameters = layers * ((1024 + 128) + (1024 + 64))\n"
    "assert exercises.check_vera_parameters(vera_1024_parameters)",
    "runs = exercises.dora_against_lora(seed=5)",
    "assert exercises.check_dora_sign(\"DoRA\", runs)",
)


def graded_cells(nb) -> list[dict]:
    return [c for c in nb.cells if c.metadata["nbgrader"]["solution"] or c.metadata["nbgrader"]["grade"]]


# --------------------------------------------------------------------------- the generator


def test_a_stub_becomes_a_solution_cell_holding_the_stub_then_the_reference_between_markers():
    pairs = pair(MAIN, SOLUTIONS, "05")
    assert [p.kind for p in pairs] == ["plain", "judged"]
    nb = source_notebook(MAIN, pairs)
    answer = nb.cells[3]
    assert answer.metadata["nbgrader"]["solution"] and not answer.metadata["nbgrader"]["locked"]
    assert answer.source == ("vera_1024_parameters = None\n### BEGIN SOLUTION\nlayers = 4\n\n"
                             "vera_1024_parameters = layers * ((1024 + 128) + (1024 + 64))\n### END SOLUTION")
    # The setup statement is written once, where it is first needed; the setup_notebook call, an unused
    # import and the import the notebook already has are left out.
    dora = nb.cells[6].source
    assert "layers = 4" not in dora and "import" not in dora and "setup_notebook" not in dora
    # the solution hands the checker `runs` and a literal: the stub's variables are set to them
    assert dora.endswith("runs = exercises.dora_against_lora(seed=5)\nprediction_dora = 'DoRA'\n"
                         "measured_pair = runs\n### END SOLUTION")


def test_checks_become_graded_cells_whose_assertions_are_hidden_and_points_follow_the_level():
    nb = source_notebook(MAIN, pair(MAIN, SOLUTIONS, "05"))
    kinds = [(c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"].get("points")) for c in graded_cells(nb)]
    assert kinds == [("check_vera_parameters-answer", None), ("check_vera_parameters-test", POINTS["🌱"]),
                     ("check_dora_sign-answer", None), ("check_dora_sign-measurement", POINTS["🌿"] // 2),
                     ("check_dora_sign-prediction", POINTS["🌿"] // 2)]
    assert POINTS["🌱"] < POINTS["🌿"] < POINTS["🌳"]
    plain, measurement, prediction = (c.source for c in nb.cells if c.metadata["nbgrader"]["grade"])
    # the visible part of a plain exercise runs the checker (its line is the feedback); the assert is hidden
    assert "verdict_vera_parameters = exercises.check_vera_parameters(vera_1024_parameters)\n" \
           "### BEGIN HIDDEN TESTS\nassert verdict_vera_parameters.ok" in plain
    # a judged prediction: the measurement runs quietly and is graded apart from the prediction
    assert "grading.measurement(exercises.check_dora_sign, prediction_dora, measured_pair)" in measurement
    assert "### BEGIN HIDDEN TESTS\nassert outcome_dora_sign.measured\n### END HIDDEN TESTS" in measurement
    assert prediction.endswith("### BEGIN HIDDEN TESTS\nassert outcome_dora_sign.passed\n### END HIDDEN TESTS")


def test_a_prediction_without_a_measurement_of_the_learners_own_is_graded_whole():
    # the checker judges through judge_prediction, but the stub hands it the prediction only: "measurement
    # accepted" would only say that the answer is one of the choices
    main = json.loads(json.dumps(MAIN))
    main["cells"][5]["source"] = "prediction_dora = None\n\nexercises.check_dora_sign(prediction_dora, stored_runs)"
    pairs = pair(main, SOLUTIONS, "05")
    assert [p.kind for p in pairs] == ["plain", "sealed"]
    test = source_notebook(main, pairs).cells[-2]
    assert test.metadata["nbgrader"]["points"] == POINTS["🌿"] and "grading.sealed(" in test.source


def test_a_prediction_judged_whole_is_one_hidden_test_with_all_its_points():
    main = notebook("from peftlab.course.exercises import nb00_welcome as exercises",
                    "prediction = None\nmeasured = None\nexercises.check_token_count(prediction, measured, 'a b', tok)")
    solutions = notebook("from peftlab.course.exercises import nb00_welcome as exercises",
                         "prediction, measured = 3, 3\n"
                         "assert exercises.check_token_count(prediction, measured, 'a b', tok)")
    (test,) = [c for c in source_notebook(main, pair(main, solutions, "00")).cells
               if c.metadata["nbgrader"]["grade"]]
    assert test.metadata["nbgrader"]["points"] == POINTS["🌱"]
    assert "grading.sealed(exercises.check_token_count, prediction, measured, 'a b', tok)" in test.source
    assert test.source.endswith("### BEGIN HIDDEN TESTS\nassert outcome_token_count.passed\n### END HIDDEN TESTS")


def test_every_other_cell_is_read_only_and_outputs_are_cleared():
    main = json.loads(json.dumps(MAIN))
    main["cells"][1]["outputs"] = [nbformat.v4.new_output("stream", text="hello\n")]
    main["cells"][1]["execution_count"] = 1
    nb = source_notebook(main, pair(main, SOLUTIONS, "05"))
    others = [c for c in nb.cells if c not in graded_cells(nb)]
    assert len(others) == 5 and all(c.metadata["nbgrader"]["locked"] for c in others)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells]
    assert len(set(ids)) == len(ids)
    nbformat.validate(nb)


def test_an_exercise_without_its_solution_fails_loudly_naming_the_checker():
    solutions = json.loads(json.dumps(SOLUTIONS))
    del solutions["cells"][3:]
    with pytest.raises(PairingError, match=r"no solution asserts \['check_dora_sign'\]"):
        pair(MAIN, solutions, "05")


def test_a_solution_without_its_exercise_fails_loudly():
    main = json.loads(json.dumps(MAIN))
    del main["cells"][4:6]
    with pytest.raises(PairingError, match="check_dora_sign.*which no exercise cell"):
        pair(main, SOLUTIONS, "05")


def test_a_reference_that_uses_what_nothing_defines_fails_loudly():
    solutions = json.loads(json.dumps(SOLUTIONS))
    solutions["cells"][2]["source"] = ("vera_1024_parameters = undefined_helper()\n"
                                       "assert exercises.check_vera_parameters(vera_1024_parameters)")
    with pytest.raises(PairingError, match="check_vera_parameters uses `undefined_helper`"):
        pair(MAIN, solutions, "05")


def test_a_reference_that_leaves_a_stub_variable_unset_fails_loudly():
    main = json.loads(json.dumps(MAIN))
    main["cells"][3]["source"] = ("vera_1024_parameters = None\nextra = None\n\n"
                                  "exercises.check_vera_parameters(vera_1024_parameters)")
    with pytest.raises(PairingError, match=r"never sets \['extra'\]"):
        pair(main, SOLUTIONS, "05")


def test_a_check_call_must_end_its_cell():
    main = json.loads(json.dumps(MAIN))
    main["cells"][3]["source"] += "\nprint('after')"
    with pytest.raises(PairingError, match="must be the last statement"):
        pair(main, SOLUTIONS, "05")


def test_every_notebook_pairs_with_its_solutions(tmp_path):
    built = build(NOTEBOOKS, tmp_path)
    assert list(built) == NAMES
    for name, pairs in built.items():
        nb = nbformat.read(tmp_path / "source" / name / f"{name}.ipynb", as_version=4)
        cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
        stubs = sum(bool(re.search(r"^exercises\.check_\w+\(", c.source, re.MULTILINE)) for c in cells
                    if c.cell_type == "code")
        assert len(pairs) == stubs, f"{name}: {len(pairs)} exercises paired, {stubs} checker calls"
        points = [c.metadata["nbgrader"]["points"] for c in nb.cells if c.metadata["nbgrader"]["grade"]]
        assert sum(points) == sum(map(exercise_points, pairs)) > 0
    assert (tmp_path / "nbgrader_config.py").read_text().count(CODE_STUB) == 1


def test_the_instructors_guide_shows_the_generators_points_table(tmp_path):
    table = points_table(build(NOTEBOOKS, tmp_path))
    guide = (REPO / "docs" / "INSTRUCTORS.md").read_text()
    assert table in guide, "docs/INSTRUCTORS.md's points table is stale: paste `make assignments`'s table"


# --------------------------------------------------------------------------- nbgrader


def nbgrader(root: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run an nbgrader command in the course root; it must neither fail nor log an error."""
    env = {**os.environ,
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),   # this venv's python3 kernel
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}   # alembic
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "| ERROR]" not in log, f"nbgrader {' '.join(args)} failed:\n{log[-5000:]}"
    return done


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course root with every notebook generated by nbgrader (one command for all), each release written."""
    root = tmp_path_factory.mktemp("course")
    build(NOTEBOOKS, root)
    nbgrader(root, "generate_assignment", "*", "--force")
    return root


def test_nbgrader_generates_every_release_without_reference_code_or_hidden_tests(course):
    for name in NAMES:
        source = nbformat.read(course / "source" / name / f"{name}.ipynb", as_version=4)
        release = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
        assert len(release.cells) == len(source.cells)
        for before, after in zip(source.cells, release.cells):
            meta = after.metadata["nbgrader"]
            if meta["solution"]:
                stub, _, reference = before.source.partition("### BEGIN SOLUTION\n")
                assert after.source == stub + CODE_STUB, f"{name}: a release keeps the stub, and only the stub"
                assert after.metadata.get("editable", True)
            else:
                assert after.metadata["editable"] is False and after.metadata["deletable"] is False
            if meta["grade"]:
                assert not HIDDEN.search(after.source), f"{name}: a hidden test is visible in the release"
                assert HIDDEN.search(before.source)
        text = nbformat.writes(release)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text


def grades(root: Path) -> dict[tuple[str, str], tuple[float, float]]:
    nbgrader(root, "export", "--to", str(root / "grades.csv"))
    with open(root / "grades.csv", newline="") as f:
        return {(r["assignment"], r["student_id"]): (float(r["score"]), float(r["max_score"]))
                for r in csv.DictReader(f)}


def errors(nb) -> list[tuple[str, str, bool]]:
    """(grade id, error name, in a graded cell?) of every error the executed notebook shows."""
    return [(c.metadata["nbgrader"]["grade_id"], o.ename, c.metadata["nbgrader"]["grade"])
            for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.assignments
@pytest.mark.parametrize("name", NAMES)
def test_autograde_gives_the_solutions_full_marks_and_a_blank_release_zero(course, name):
    students = {"reference": course / "source"} | ({"blank": course / "release"} if name in BLANK else {})
    for student, folder in students.items():
        target = course / "submitted" / student / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name / f"{name}.ipynb", target)
    started = time.monotonic()
    nbgrader(course, "autograde", name, "--force")
    print(f"{name}: autograded {len(students)} submission(s) in {time.monotonic() - started:.0f} s")
    scores = grades(course)
    score, most = scores[(name, "reference")]
    assert most > 0 and score == most, f"{name}: the solutions score {score} of {most}"
    # Nothing but a teaching claim may fail around the solutions (a claim on timings can, on a busy machine:
    # nbval answers for those); a NameError or TypeError would mean a solution broke the notebook around it.
    reference = nbformat.read(course / "autograded" / "reference" / name / f"{name}.ipynb", as_version=4)
    broken = [e for e in errors(reference) if e[1] != "AssertionError" or e[2]]
    assert broken == [], f"{name}: around the solutions, {broken}"
    if errors(reference):
        print(f"{name}: teaching claims failed in this run: {errors(reference)}")
    if name in BLANK:
        assert scores[(name, "blank")] == (0.0, most), f"{name}: the blank release scores {scores[(name, 'blank')]}"
        blank = nbformat.read(course / "autograded" / "blank" / name / f"{name}.ipynb", as_version=4)
        unrun = [i for i, c in enumerate(blank.cells) if c.cell_type == "code" and c.source.strip()
                 and c.execution_count is None]
        assert unrun == [], f"{name}: the blank release did not run cells {unrun}"
        assert {(e, graded) for _, e, graded in errors(blank)} == {("AssertionError", True)}, errors(blank)
