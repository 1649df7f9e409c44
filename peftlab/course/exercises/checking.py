"""What every checker shares: detecting an untouched stub and reporting in one voice."""
NOT_ATTEMPTED = "not attempted yet"


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


def report(exercise: str, ok: bool | None, message: str = "") -> Verdict:
    """Print one line: not attempted (ok is None), correct, or wrong with a hint."""
    if ok is None:
        print(f"\u23f3 {exercise}: {NOT_ATTEMPTED} - fill in the stub above and re-run this cell.")
        return Verdict(False)
    mark = "\u2705" if ok else "\u274c"   # check mark / cross
    print(f"{mark} {exercise}: {message or ('correct!' if ok else 'not yet.')}")
    return Verdict(ok)


def judge_prediction(exercise: str, prediction: str, found: str, measured: str, lesson: str) -> Verdict:
    """A predict-then-measure verdict: what was measured, whether it is what the learner predicted, and
    the lesson either way."""
    if prediction != found:
        return report(exercise, False, f"{measured}: {found!r}, not {prediction!r}. {lesson}")
    return report(exercise, True, f"{measured}: {found!r}, as you predicted. {lesson}")


def call_stub(fn, *args):
    """Run a learner's function; a stub that still raises NotImplementedError counts as not attempted."""
    try:
        return fn(*args)
    except NotImplementedError:
        return None
