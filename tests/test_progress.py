"""The learner's progress (peftlab.course.progress and progress_view) and the graded edition's quiet checks
(peftlab.course.grading): every checker records its latest verdict in a file that survives a corrupted
write, two writers at once and a deletion; the view counts done, attempted and not started per notebook."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peftlab.course import grading, progress
from peftlab.course.__main__ import main
from peftlab.course.exercises import nb05_lora_variants as nb05
from peftlab.course.exercises import nb11_qlora as nb11
from peftlab.course.progress_view import by_notebook, catalogue, current, progress_widget, states, table

VERA = 4 * ((1024 + 128) + (1024 + 64))   # the right answer of nb05's warm-up


def row(text: str, notebook: str) -> list[str]:
    """The counts (done, attempted, not started) on a notebook's line of the table."""
    return next(line.split()[1:] for line in text.splitlines() if line.startswith(notebook))


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home" / "progress.json"
    monkeypatch.setenv(progress.ENV, str(path))
    return path


def test_a_checker_records_its_latest_verdict_and_a_stub_records_nothing(store, capsys):
    assert not nb05.check_vera_parameters(None)
    assert not store.exists(), "an untouched stub is not an attempt"
    assert not nb05.check_vera_parameters(VERA + 1)
    entry = progress.load()["05_lora_variants/check_vera_parameters"]
    assert entry["passed"] is False and entry["notebook"] == "05_lora_variants"
    assert nb05.check_vera_parameters(VERA)
    assert progress.load()["05_lora_variants/check_vera_parameters"]["passed"] is True
    nb05.check_vera_parameters(None)   # re-running a fresh copy of the notebook does not undo it
    assert progress.load()["05_lora_variants/check_vera_parameters"]["passed"] is True
    assert "VeRA" in capsys.readouterr().out


def test_the_view_counts_done_attempted_and_not_started_per_notebook(store):
    nb05.check_vera_parameters(VERA)
    nb05.check_full_rank_budget("LoRA", 1)
    found = current()
    counts = by_notebook(found)
    assert counts["05_lora_variants"] == {"done": 1, "attempted": 1, "not started": 1}
    assert counts["01_full_finetuning"] == {"done": 0, "attempted": 0, "not started": 4}
    text = table(found)
    assert row(text, "05_lora_variants") == ["1", "1", "1"]
    assert "\u2705 🌱 VeRA r=1024" in text and "\u274c 🌳 Decide" in text


def test_the_catalogue_is_every_checker_of_every_notebook_titled_with_its_level():
    exercises = catalogue()
    notebooks = {e.notebook for e in exercises}
    assert {"00_welcome", "05_lora_variants", "15_peft_for_images"} <= notebooks
    assert all(e.title[0] in "🌱🌿🌳" and e.checker.startswith("check_") for e in exercises)
    assert [e.checker for e in exercises if e.notebook == "05_lora_variants"] == [
        "check_vera_parameters", "check_full_rank_budget", "check_dora_sign"]


def test_deleting_the_file_starts_again(store):
    nb05.check_vera_parameters(VERA)
    store.unlink()
    assert progress.load() == {}
    assert set(states({}, catalogue()).values()) == {"not started"}


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b'{"version": 99, "exercises": {}}',
                                     b'{"version": 1, "exercises": {"a/b": {"passed": "yes"}}}', b"[]"])
def test_a_corrupted_file_is_reported_and_set_aside_never_a_crash(store, capsys, content):
    store.parent.mkdir(parents=True)
    store.write_bytes(content)
    assert nb05.check_vera_parameters(VERA), "the checker still answers"
    err = capsys.readouterr().err
    assert "could not be read" in err and "renamed" in err
    (aside,) = store.parent.glob("progress.json.corrupt-*")
    assert aside.read_bytes() == content, "the learner's old file is kept, not overwritten"
    assert list(progress.load()) == ["05_lora_variants/check_vera_parameters"]


def test_a_file_that_cannot_be_written_is_said_once_and_the_checker_still_answers(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv(progress.ENV, str(blocker / "progress.json"))   # its folder is a file
    monkeypatch.setattr(progress, "_warned", False)
    assert nb05.check_vera_parameters(VERA)
    assert nb05.check_vera_parameters(VERA)
    assert capsys.readouterr().err.count("progress not saved") == 1


WRITER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("progress", sys.argv[1])
    progress = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(progress)
    for i in range(int(sys.argv[3])):
        progress.record("99_test", f"check_{sys.argv[2]}_{i}", "t", i % 2 == 0)
""")


def test_two_writers_at_once_lose_nothing_and_never_leave_half_a_file(store):
    module = Path(progress.__file__)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(module), name, "60"])
               for name in ("a", "b")]
    seen = 0
    while any(w.poll() is None for w in writers):   # a reader meanwhile always finds a whole file
        if store.exists():
            seen = max(seen, len(json.loads(store.read_text())["exercises"]))
    assert [w.returncode for w in writers] == [0, 0]
    entries = progress.load()
    assert len(entries) == 120 and seen <= 120
    assert not list(store.parent.glob("*.tmp")) and not list(store.parent.glob("*.corrupt-*"))


def test_the_command_prints_the_table(store, capsys):
    nb05.check_vera_parameters(VERA)
    assert main(["progress"]) == 0
    out = capsys.readouterr().out
    assert str(store) in out and row(out, "05_lora_variants") == ["1", "0", "2"]
    assert main(["progress", "--brief", "--file", str(store.parent / "none.json")]) == 0
    out = capsys.readouterr().out
    assert "nothing recorded yet" in out and "VeRA" not in out


def test_the_widget_shows_the_table_as_text_and_refreshes_on_a_click(store):
    view = progress_widget()
    bundle = view._repr_mimebundle_()
    assert bundle["text/plain"].splitlines()[0].split() == ["notebook", "done", "attempted", "not", "started"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    html, (button, when), _ = view.children[0], view.children[1].children, view.children[2]
    assert when.value == "", "nothing that changes from run to run before the first click"
    before = html.value
    nb05.check_vera_parameters(VERA)
    button.click()
    assert html.value != before and when.value.startswith("refreshed at")


# --------------------------------------------------------------------------- the graded edition's checks


SETTINGS = dict(size="65B", method="QLoRA", r=64, batch=1, seq=2048)


def gib() -> float:
    from peftlab.workbook.memory import finetuning_memory
    return finetuning_memory(**SETTINGS)["total"] / 2**30


def test_a_measurement_is_graded_apart_from_its_prediction_without_telling_the_outcome(store, capsys):
    right = grading.measurement(nb11.check_65b_at_2048, "fits", SETTINGS, gib())
    wrong = grading.measurement(nb11.check_65b_at_2048, "does not fit", SETTINGS, gib())
    badly_measured = grading.measurement(nb11.check_65b_at_2048, "fits", SETTINGS, gib() * 2)
    blank = grading.measurement(nb11.check_65b_at_2048, None, SETTINGS, None)
    assert (right.measured, right.passed) == (True, True)
    assert (wrong.measured, wrong.passed) == (True, False)
    assert (badly_measured.measured, badly_measured.passed) == (False, False)
    assert not blank.attempted and not blank.passed
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == lines[1] and "accepted" in lines[0], "a right and a wrong prediction print the same"
    assert "GiB" not in "".join(lines) and "not yet" not in lines[0]
    assert "does not accept" in lines[2] and "not attempted" in lines[3]
    assert not store.exists(), "a quiet check is not recorded: the progress file would tell the outcome"


def test_a_sealed_check_says_only_that_the_answer_is_in(store, capsys):
    from peftlab.course.exercises import nb00_welcome as nb00
    from peftlab.workbook import load_base_model
    _, tokenizer = load_base_model()
    prompt = "Mia went to the market ."
    truth = len(tokenizer(prompt)["input_ids"])
    right = grading.sealed(nb00.check_token_count, truth, truth, prompt, tokenizer)
    wrong = grading.sealed(nb00.check_token_count, truth + 1, truth, prompt, tokenizer)
    assert right.passed and not wrong.passed and right.attempted and wrong.attempted
    out = capsys.readouterr().out.splitlines()
    assert out[0] == out[1] == "\u2709 answer recorded. It is graded when your work is collected."
