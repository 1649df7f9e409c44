"""A notebook's ipywidgets as static HTML: what each widget showed when the notebook was saved.

A widget needs a running kernel, so a static page cannot offer one. What it can show is the state
the notebook stored (`metadata.widgets`): the controls with their values, and the outputs each
`Output` widget held (plots, printed text). `snapshot_widgets` replaces every widget view in a
notebook's outputs by that picture; the site builder (`peftlab.course.site`) calls it.
"""
from __future__ import annotations

import html
import math

import nbformat

VIEW_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"
NOTE = ("Interactive widget, shown as it was when the notebook was saved: "
        "run the notebook in JupyterLab to use it.")
MISSING = "An interactive widget: run the notebook in JupyterLab to see it (this copy stores no widget state)."
# Models a learner moves; a view holding one of them gets the note above.
INTERACTIVE = {"IntSliderModel", "FloatSliderModel", "FloatLogSliderModel", "IntRangeSliderModel",
               "FloatRangeSliderModel", "SelectionSliderModel", "SelectionRangeSliderModel",
               "DropdownModel", "SelectModel", "SelectMultipleModel", "RadioButtonsModel",
               "ToggleButtonsModel", "ToggleButtonModel", "CheckboxModel", "TextModel", "TextareaModel",
               "IntTextModel", "FloatTextModel", "BoundedIntTextModel", "BoundedFloatTextModel",
               "ButtonModel", "PlayModel", "ComboboxModel", "ColorPickerModel", "DatePickerModel"}
CHOICE_MODELS = {"DropdownModel", "SelectModel", "RadioButtonsModel", "ToggleButtonsModel",
                 "SelectionSliderModel", "ComboboxModel"}


def _ref(value: str) -> str:
    return value.removeprefix("IPY_MODEL_")


def _descendants(model_id: str, state: dict) -> set[str]:
    """Names of the models in the tree under `model_id` (itself included)."""
    model = state.get(model_id)
    if model is None:
        return set()
    names = {model["model_name"]}
    for child in model["state"].get("children", []):
        names |= _descendants(_ref(child), state)
    return names


def _number(value, fmt: str | None) -> str:
    try:
        return format(value, fmt or "")
    except (TypeError, ValueError):
        return str(value)


def _control(name: str, s: dict) -> str:
    """One control as disabled HTML, its value visible."""
    label = f'<label style="margin-right:0.5em">{html.escape(s.get("description", ""))}</label>'
    if name in CHOICE_MODELS:
        labels = [str(x) for x in s.get("_options_labels", [])]
        index = s.get("index")
        chosen = labels[index] if isinstance(index, int) and 0 <= index < len(labels) else ""
        if name == "ToggleButtonsModel":
            buttons = "".join(
                f'<button disabled style="{"font-weight:bold;border:2px solid #1976d2" if i == index else ""}">'
                f"{html.escape(text)}</button>" for i, text in enumerate(labels))
            return f"<div>{label}{buttons}</div>"
        if name == "SelectionSliderModel":
            return (f'<div>{label}<input type="range" disabled min="0" max="{max(len(labels) - 1, 0)}" '
                    f'value="{index or 0}"> <b>{html.escape(chosen)}</b></div>')
        return f'<div>{label}<select disabled><option selected>{html.escape(chosen)}</option></select></div>'
    if name.endswith("SliderModel"):
        value, low, high = s.get("value"), s.get("min", 0), s.get("max", 100)
        position = value
        if name == "FloatLogSliderModel" and isinstance(value, (int, float)) and value > 0:
            position = math.log(value, s.get("base", 10))   # min and max are exponents
        readout = (" – ".join(_number(v, s.get("readout_format")) for v in value)
                   if isinstance(value, list) else _number(value, s.get("readout_format")))
        slider = (f'<input type="range" disabled min="{low}" max="{high}" step="any" value="{position}">'
                  if isinstance(position, (int, float)) else "")
        return f"<div>{label}{slider} <b>{html.escape(readout)}</b></div>"
    if name in {"CheckboxModel", "ToggleButtonModel"}:
        checked = " checked" if s.get("value") else ""
        return f'<div><input type="checkbox" disabled{checked}> {label}</div>'
    if name == "ButtonModel":
        return f'<div><button disabled>{html.escape(s.get("description", ""))}</button></div>'
    if name in {"HTMLModel", "HTMLMathModel"}:
        return f'<span>{s.get("value", "")}</span>'   # HTML by definition, written by the notebook
    if name == "LabelModel":
        return f'<span>{html.escape(str(s.get("value", "")))}</span>'
    if name in {"IntProgressModel", "FloatProgressModel"}:
        return f'<progress value="{s.get("value", 0)}" max="{s.get("max", 100)}"></progress>'
    if "value" in s:   # Text, Textarea, IntText, ...: the value in a disabled box
        return f'<div>{label}<input type="text" disabled value="{html.escape(str(s["value"]))}"></div>'
    return f'<span>[{html.escape(name.removesuffix("Model"))}]</span>'


def _walk(model_id: str, state: dict, pieces: list) -> None:
    """Append the model's picture to `pieces`: HTML strings, and lists of outputs for Output widgets."""
    model = state.get(model_id)
    if model is None:
        return
    name, s = model["model_name"], model["state"]
    if name == "OutputModel":
        pieces.append(list(s.get("outputs", [])))
    elif "children" in s:
        children = [_ref(c) for c in s["children"]]
        if any("OutputModel" in _descendants(c, state) for c in children):
            for child in children:   # a box around an Output cannot be one piece of HTML: flatten it
                _walk(child, state, pieces)
            return
        inner: list = []
        for child in children:
            _walk(child, state, inner)
        direction = "row" if name in {"HBoxModel", "GridBoxModel"} else "column"
        pieces.append(f'<div style="display:flex;flex-direction:{direction};gap:0.5em;align-items:center">'
                      + "".join(inner) + "</div>")
    else:
        pieces.append(_control(name, s))


def static_outputs(model_id: str, state: dict) -> list:
    """The outputs that stand for the widget `model_id` on a static page."""
    if model_id not in state:
        return [nbformat.v4.new_output("display_data", data={"text/plain": MISSING})]
    pieces: list = []
    if _descendants(model_id, state) & INTERACTIVE:
        pieces.append(f'<div style="font-size:85%;color:#555;font-style:italic">{html.escape(NOTE)}</div>')
    _walk(model_id, state, pieces)
    outputs, chunk = [], []
    for piece in pieces + [[]]:
        if isinstance(piece, str):
            chunk.append(piece)
            continue
        if chunk:
            outputs.append(nbformat.v4.new_output("display_data", data={"text/html": "".join(chunk)}))
            chunk = []
        outputs.extend(nbformat.from_dict(o) for o in piece)
    return outputs


def snapshot_widgets(nb) -> int:
    """Replace every widget view in `nb`'s outputs by its static picture, in place; return how many."""
    state = nb.get("metadata", {}).get("widgets", {}).get(STATE_MIME, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(VIEW_MIME)
            if view is None:
                outputs.append(out)
                continue
            outputs.extend(static_outputs(view["model_id"], state))
            replaced += 1
        cell.outputs = outputs
    return replaced


def interactive_views(nb) -> int:
    """How many widget views in `nb`'s outputs hold a control a learner moves (read from the stored state)."""
    state = nb.get("metadata", {}).get("widgets", {}).get(STATE_MIME, {}).get("state", {})
    return sum(
        bool(_descendants(out["data"][VIEW_MIME]["model_id"], state) & INTERACTIVE)
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if VIEW_MIME in out.get("data", {})
    )
