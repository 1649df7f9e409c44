"""What every checker shares: detecting an untouched stub, reporting in one voice, and recording the
verdict in the learner's progress file (peftlab.course.progress)."""
import re
import sys

from peftlab.course import progress

NOT_ATTEMPTED = "not attempted yet"
CHECKER_MODULE = re.compile(r"^peftlab\.course\.exercises\.nb(\d+_\w+)$")
# One entry per judge_prediction call, whether the prediction matched: the graded edition
# (peftlab.course.grading) reads it to grade a measurement apart from its prediction.
judgements: list[bool] = []


def attempted(answer) -> bool:
    return answer is not None and answer is not NotImplemented


class Verdict:
    """A checker's result: truthy when correct (so solutions can `assert` it); a notebook cell
    that ends with a checker call shows only the printed line, not a stray `False`."""

    def __init__(self, ok: bool):
        self.ok = ok

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"Verdict({self.ok})"

    def _ipython_display_(self) -> None:
        pass


def calling_checker() -> tuple[str, str] | None:
    """(notebook, checker name) of the `check_*` function of an exercises module that is running, e.g.
    ("05_lora_variants", "check_dora_sign"); None outside a checker. Read from the call stack, so that
    every checker records its verdict without a line of its own."""
    frame = sys._getframe(1)
    while frame is not None:
        found = CHECKER_MODULE.match(frame.f_globals.get("__name__", ""))
        if found and frame.f_code.co_name.startswith("check_"):
            return found.group(1), frame.f_code.co_name
        frame = frame.f_back
    return None


def report(exercise: str, ok: bool | None, message: str = "") -> Verdict:
    """Print one line: not attempted (ok is None), correct, or wrong with a hint. An attempt (right or
    wrong) is recorded in the learner's progress file."""
    if ok is None:
        print(f"\u23f3 {exercise}: {NOT_ATTEMPTED} - fill in the stub above and re-run this cell.")
        return Verdict(False)
    checker = calling_checker()
    if checker is not None:
        progress.record(*checker, title=exercise, passed=ok)
    mark = "\u2705" if ok else "\u274c"   # check mark / cross
    print(f"{mark} {exercise}: {message or ('correct!' if ok else 'not yet.')}")
    return Verdict(ok)


def judge_prediction(exercise: str, prediction: str, found: str, measured: str, lesson: str) -> Verdict:
    """A predict-then-measure verdict: what was measured, whether it is what the learner predicted, and
    the lesson either way."""
    judgements.append(prediction == found)
    if prediction != found:
        return report(exercise, False, f"{measured}: {found!r}, not {prediction!r}. {lesson}")
    return report(exercise, True, f"{measured}: {found!r}, as you predicted. {lesson}")


def call_stub(fn, *args):
    """Run a learner's function; a stub that still raises NotImplementedError counts as not attempted."""
    try:
        return fn(*args)
    except NotImplementedError:
        return None
