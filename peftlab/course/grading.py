"""What the graded (nbgrader) edition's test cells call for a prediction exercise.

A checker's line says what was measured, so in a graded notebook it would tell the learner the
outcome they are asked to predict, and let them change the prediction afterwards. These helpers run
the checker without printing its line and without recording it in the progress file, and print only
what the learner may know before the work is collected. The verdict stays in the returned `Outcome`,
which the hidden tests assert on (peftlab.course.assignments writes those cells).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from peftlab.course import progress
from peftlab.course.exercises import checking


@dataclass(frozen=True)
class Outcome:
    attempted: bool   # the stub was filled in
    measured: bool    # the checker accepted the measurement and judged the prediction against it
    passed: bool      # the whole exercise passed: prediction included

    def _ipython_display_(self) -> None:   # a cell ending with a call shows the printed line only
        pass


def _quietly(check, *args, **kwargs) -> Outcome:
    judged = len(checking.judgements)
    with contextlib.redirect_stdout(io.StringIO()) as printed, progress.paused():
        verdict = check(*args, **kwargs)
    attempted = checking.NOT_ATTEMPTED not in printed.getvalue()
    return Outcome(attempted, len(checking.judgements) > judged, bool(verdict))


def measurement(check, *args, **kwargs) -> Outcome:
    """For a checker that judges through judge_prediction: say whether the measurement is accepted,
    not whether the prediction holds."""
    outcome = _quietly(check, *args, **kwargs)
    if outcome.measured:   # even where a later part of the exercise is still a stub
        print("\u2705 measurement accepted. Your prediction is graded when your work is collected.")
    elif not outcome.attempted:
        print(f"\u23f3 {checking.NOT_ATTEMPTED}: fill in the stub above and re-run this cell.")
    else:
        print("\u274c the checker does not accept this measurement (or the answer it needs) yet: measure exactly "
              "as the exercise says, then re-run this cell.")
    return outcome


def sealed(check, *args, **kwargs) -> Outcome:
    """For a prediction whose checker cannot tell the measurement from the prediction: say only that the
    answer is in."""
    outcome = _quietly(check, *args, **kwargs)
    if outcome.attempted:
        print("\u2709 answer recorded. It is graded when your work is collected.")
    else:
        print(f"\u23f3 {checking.NOT_ATTEMPTED}: fill in the stub above and re-run this cell.")
    return outcome
