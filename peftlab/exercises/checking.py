"""What every checker shares: detecting an untouched stub and reporting in one voice."""
NOT_ATTEMPTED = "not attempted yet"


def attempted(answer) -> bool:
    return answer is not None and answer is not NotImplemented


def report(exercise: str, ok: bool | None, message: str = "") -> bool:
    """Print one line: not attempted (ok is None), correct, or wrong with a hint."""
    if ok is None:
        print(f"\u23f3 {exercise}: {NOT_ATTEMPTED} - fill in the stub above and re-run this cell.")
        return False
    print(f"{'\u2705' if ok else '\u274c'} {exercise}: {message or ('correct!' if ok else 'not yet.')}")
    return ok


def call_stub(fn, *args):
    """Run a learner's function; a stub that still raises NotImplementedError counts as not attempted."""
    try:
        return fn(*args)
    except NotImplementedError:
        return None
