"""Move every control of every interactive ipywidget a notebook shows in JupyterLab, one at a time,
and record whether the widget's output changed: what a learner does first with a widget.

A widget view is one cell output holding ipywidgets; its "output" is everything in it except the
controls themselves (Output widgets with their plots and text, HTML and labels), so a slider's own
readout moving does not count. Each control is moved (a slider: the right arrow key on its
focused handle, or the left one at its end; a dropdown, toggle buttons, radio buttons: the next
option; a checkbox: a click; a text box: a few more characters), the kernel is given time to answer,
and the output is compared with what it was; then the control is moved back, so each control is
tried against the state the notebook left. A widget that only acts on a button press ("Generate")
names that button in the per-notebook table in test_browser.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from lab_page import PENDING

POLL_S = 0.2
STABLE_S = 0.8      # once the kernel has answered, the output must stay the same this long
MOVE_TIMEOUT_S = 120

# Marks each top-level widget view (not one inside an Output widget) holding a control, and each
# control in it, with data-probe-* attributes; returns them in page order.
TAG_CONTROLS = """
() => {
  const KINDS = [['slider', '.widget-slider'], ['dropdown', '.widget-dropdown'],
    ['toggles', '.widget-toggle-buttons'], ['toggle', '.widget-toggle-button'],
    ['checkbox', '.widget-checkbox'], ['text', '.widget-text, .widget-textarea'],
    ['radio', '.widget-radio'], ['select', '.widget-select, .widget-select-multiple'],
    ['button', '.widget-button'], ['play', '.widget-play']];
  const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'));
  const views = Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell .jp-OutputArea-output'))
    .filter(e => !e.parentElement.closest('.widget-output') && e.querySelector('.jupyter-widgets'));
  const found = [];
  for (const view of views) {
    const controls = [];
    for (const [kind, selector] of KINDS) {
      for (const el of view.querySelectorAll(selector)) {
        if (kind === 'toggle' && el.closest('.widget-toggle-buttons')) continue;
        if (el.closest('.widget-output')) continue;
        controls.push({el, kind});
      }
    }
    if (!controls.length) continue;
    controls.sort((a, b) => (a.el.compareDocumentPosition(b.el) & Node.DOCUMENT_POSITION_FOLLOWING) ? -1 : 1);
    const v = found.length;
    view.setAttribute('data-probe-view', v);
    found.push({view: v, cell: cells.indexOf(view.closest('.jp-Cell')), controls: controls.map((c, j) => {
      c.el.setAttribute('data-probe-control', `${v}-${j}`);
      const labels = Array.from(c.el.querySelectorAll('.widget-label, .widget-label-basic'))
        .map(l => l.textContent.replace(/\\u200b/g, '').trim()).filter(t => t);
      return {id: `${v}-${j}`, kind: c.kind, label: labels[0] || c.el.textContent.trim()};
    })});
  }
  return found;
}
"""

# The view's HTML without its controls, and how many messages the kernel has yet to answer.
SNAPSHOT = f"""
(view) => {{
  const el = document.querySelector(`[data-probe-view="${{view}}"]`);
  let html = null;
  if (el) {{
    const clone = el.cloneNode(true);
    clone.querySelectorAll('[data-probe-control]').forEach(e => e.remove());
    html = clone.innerHTML;
  }}
  return {{html, pending: ({PENDING})()}};
}}
"""


@dataclass
class Probe:
    view: int          # index among the widget views with controls, in page order
    cell: int          # index of the cell that shows it
    kind: str
    label: str
    move: str          # what was done, e.g. "rank r: 8 -> 16 (ArrowRight)"
    changed: bool | None   # None: not moved (a play button, the apply button)

    def __str__(self) -> str:
        verdict = {True: "output changed", False: "OUTPUT DID NOT CHANGE", None: "not moved"}[self.changed]
        return f"cell {self.cell}, {self.kind} '{self.label}': {self.move}: {verdict}"


def _settle(page, view: int) -> str | None:
    """The view once the kernel has answered every message sent so far and the view stays put."""
    started = time.monotonic()
    last, stable_since = None, started
    while True:
        state = page.evaluate(SNAPSHOT, view)
        now = time.monotonic()
        if state["html"] != last:
            last, stable_since = state["html"], now
        if state["pending"] == 0 and now - stable_since >= STABLE_S:
            return last
        if now - started > MOVE_TIMEOUT_S:
            raise TimeoutError(f"widget view {view} did not settle in {MOVE_TIMEOUT_S} s "
                               f"({state['pending']} message(s) unanswered)")
        time.sleep(POLL_S)


def _readout(control) -> str:
    readout = control.locator(".widget-readout")
    return readout.first.inner_text().strip() if readout.count() else "?"


def _move(control, kind: str, steps: int):
    """Move the control; return (description, a function that moves it back), or None if it cannot move."""
    if kind == "slider":
        handle = control.locator(".noUi-handle").first
        before = _readout(control)
        value = handle.get_attribute("aria-valuenow")
        handle.focus()
        key, back = ("ArrowRight", "ArrowLeft") if steps > 0 else ("ArrowLeft", "ArrowRight")
        steps = abs(steps)
        for _ in range(steps):
            handle.press(key)
        if handle.get_attribute("aria-valuenow") == value:   # at its end
            key, back = back, key
            for _ in range(steps):
                handle.press(key)

        def restore() -> None:   # back to where it was, however far it went
            for _ in range(steps):
                if handle.get_attribute("aria-valuenow") == value:
                    return
                handle.press(back)
        return f"{before} -> {_readout(control)} ({steps}x {key})", restore
    if kind in {"dropdown", "select"}:
        box = control.locator("select").first
        index, n = box.evaluate("s => [s.selectedIndex, s.options.length]")
        labels = box.evaluate("s => Array.from(s.options).map(o => o.textContent.replace(/\\u00a0/g, ' '))")
        new = (index + 1) % n
        box.select_option(index=new)
        return f"{labels[index]!r} -> {labels[new]!r}", lambda: box.select_option(index=index)
    if kind in {"toggles", "radio"}:
        options = control.locator("button" if kind == "toggles" else "input[type=radio]")
        chosen = options.evaluate_all("os => os.findIndex(o => o.classList.contains('mod-active') || o.checked)")
        labels = control.locator("button" if kind == "toggles" else "label").all_inner_texts()
        new = (chosen + 1) % options.count()
        options.nth(new).click()
        return (f"{labels[chosen] if chosen >= 0 else None!r} -> {labels[new]!r}",
                lambda: options.nth(chosen).click())
    if kind in {"checkbox", "toggle"}:
        box = control.locator("input[type=checkbox]").first if kind == "checkbox" else control
        box.click()
        return "clicked", lambda: box.click()
    if kind == "text":
        box = control.locator("input, textarea").first
        old = box.input_value()
        if box.get_attribute("type") == "number":
            new = str(int(old) + 1) if old.lstrip("-").isdigit() else str(float(old or 0) + 1)
        else:
            new = old + " and"

        def put(value: str) -> None:
            box.fill(value)
            box.press("Enter")
        put(new)
        return f"{old!r} -> {new!r}", lambda: put(old)
    if kind == "button":
        control.click()
        return "clicked", lambda: None
    return None


def _press(page, view: int, button: dict) -> None:
    """Press the widget's apply button once the kernel has the new value (ipywidgets holds back a
    burst of updates until the kernel has answered the first)."""
    _settle(page, view)
    page.locator(f'[data-probe-control="{button["id"]}"]').click()


def probe_widgets(page, special: dict) -> list[Probe]:
    """Move each control of each widget view (see the module's docstring); return what happened.
    Needs lab_page.TRACK_PENDING run on the page first.

    `special` (from the per-notebook table): "apply", the label of a button to press after each
    move (and after moving back); "steps", {control label: arrow-key presses, negative for the left
    arrow} where one step to the right shows nothing (default 1)."""
    apply = special.get("apply")
    results = []
    for view in page.evaluate(TAG_CONTROLS):
        v = view["view"]
        apply_button = next((c for c in view["controls"] if c["kind"] == "button" and c["label"] == apply), None)

        before = _settle(page, v)
        for c in view["controls"]:
            if c is apply_button:
                continue
            control = page.locator(f'[data-probe-control="{c["id"]}"]')
            control.scroll_into_view_if_needed()
            moved = _move(control, c["kind"], special.get("steps", {}).get(c["label"], 1))
            if moved is None:
                results.append(Probe(v, view["cell"], c["kind"], c["label"], "cannot be moved by the test", None))
                continue
            description, restore = moved
            if apply_button is not None:
                _press(page, v, apply_button)
                description += f", then '{apply}'"
            after = _settle(page, v)
            results.append(Probe(v, view["cell"], c["kind"], c["label"], description, after != before))
            restore()
            if apply_button is not None:
                _press(page, v, apply_button)
            before = _settle(page, v)
    return results
