"""Static checks on every committed notebook (notebooks/**/*.ipynb), without running them.

Each `check_*` function takes a parsed notebook (a dict as in the .ipynb JSON) and returns a list
of human-readable problems; an empty list means the notebook passes. `test_checks_catch_*` feed
deliberately broken in-memory notebooks to the same functions, so every check is known to fail
when it should.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
MAX_BYTES = 2 * 1024 * 1024
KERNEL_NAME = "python3"
# Markdown headings that open an exercise carry one of the difficulty marks (NOTEBOOKS.md).
EXERCISE_MARKS = ("🌱", "🌿", "🌳")
EXERCISES_MODULE = "peftlab.course.exercises"
# First arguments of datasets.load_dataset that read local files rather than the hub.
LOCAL_DATASET_BUILDERS = {"json", "csv", "text", "parquet", "arrow", "pandas", "imagefolder"}


def notebook_paths() -> list[Path]:
    return sorted(
        p for p in NOTEBOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )


# --------------------------------------------------------------------------- helpers


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _code_cells(nb: dict) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]


def _python_of(source: str) -> str:
    """The cell as plain Python: IPython magics and shell escapes turned into calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # IPython missing or a transform failed: drop magic lines instead
        return "\n".join(
            "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
        )


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(_python_of(source))
    except SyntaxError:
        return None


def _call_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


def _is_local_path(value: str, notebook_dir: Path | None) -> bool:
    if value.startswith(("/", "./", "../", "~")) or value in (".", ".."):
        return True
    if notebook_dir is not None and (notebook_dir / value).exists():
        return True
    return False


# --------------------------------------------------------------------------- checks


def check_size(size_bytes: int) -> list[str]:
    if size_bytes >= MAX_BYTES:
        return [
            f"file is {size_bytes / 1e6:.2f} MB, over the {MAX_BYTES / 2**20:.0f} MB limit "
            "(large images or widget state? lower the figure dpi, clear big outputs)"
        ]
    return []


def check_schema(nb: dict) -> list[str]:
    try:
        nbformat.validate(nbformat.from_dict(nb))
    except nbformat.ValidationError as e:
        return [f"not a valid nbformat notebook: {e.message}"]
    except Exception as e:  # noqa: BLE001 - anything that stops validation is a problem
        return [f"not a valid nbformat notebook: {e}"]
    return []


def check_kernelspec(nb: dict) -> list[str]:
    name = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if name != KERNEL_NAME:
        return [f"kernelspec name is {name!r}, expected {KERNEL_NAME!r}"]
    return []


def check_execution_order(nb: dict) -> list[str]:
    """Executed top to bottom in one fresh kernel: counts 1, 2, 3, ... over non-empty cells."""
    problems = []
    expected = 1
    for i, cell in _code_cells(nb):
        count = cell.get("execution_count")
        if not _source(cell).strip():
            if count is not None or cell.get("outputs"):
                problems.append(f"cell {i}: empty code cell has an execution count or outputs")
            continue
        if count != expected:
            problems.append(
                f"cell {i}: execution count {count}, expected {expected} "
                "(re-run with `make notebooks`)"
            )
            break  # one message is enough; every later count is off too
        expected += 1
    for i, cell in _code_cells(nb):
        if cell.get("outputs") and cell.get("execution_count") is None:
            problems.append(f"cell {i}: has outputs but no execution count (nbval fails on this)")
    return problems


def check_no_errors(nb: dict) -> list[str]:
    problems = []
    for i, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(
                    f"cell {i}: stored error output {out.get('ename')}: {out.get('evalue')}"
                )
    return problems


def check_has_assert(nb: dict) -> list[str]:
    for _, cell in _code_cells(nb):
        tree = _parse(_source(cell))
        if tree is not None and any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
            return []
    return ["no `assert` statement: every teaching claim should be checked by an assert cell"]


def check_syntax(nb: dict) -> list[str]:
    problems = []
    for i, cell in _code_cells(nb):
        if _source(cell).strip() and _parse(_source(cell)) is None:
            problems.append(f"cell {i}: does not parse as Python (after IPython magics)")
    return problems


def _string_args(call: ast.Call, keywords: tuple[str, ...], positions: int) -> list[str]:
    nodes = list(call.args[:positions]) + [kw.value for kw in call.keywords if kw.arg in keywords]
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def check_no_hub_ids(nb: dict, notebook_dir: Path | None = None) -> list[str]:
    """from_pretrained / load_dataset given a literal that is not a local path would download.

    Local means: starts with / ./ ../ ~, exists next to the notebook, or is a folder the notebook
    itself writes with save_pretrained. Show hub usage through a variable chosen after a network
    check, falling back to the bundled model (NOTEBOOKS.md: "Offline: nothing is downloaded").
    """
    trees = [(i, _parse(_source(cell))) for i, cell in _code_cells(nb)]
    saved: set[str] = set()
    for _, tree in trees:
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Call) and _call_name(node) in ("save_pretrained", "save_model"):
                saved.update(_string_args(node, ("save_directory", "output_dir"), 1))
    problems = []
    for i, tree in trees:
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            if name == "from_pretrained":
                # AutoModel.from_pretrained("id") and PeftModel.from_pretrained(model, "id")
                values = _string_args(node, ("pretrained_model_name_or_path", "model_id"), 2)
            elif name == "load_dataset":
                values = [
                    v for v in _string_args(node, ("path",), 1) if v not in LOCAL_DATASET_BUILDERS
                ]
            else:
                continue
            for value in values:
                if value in saved or _is_local_path(value, notebook_dir):
                    continue
                problems.append(
                    f"cell {i}: {name}({value!r}) looks like a hub id; notebooks must not "
                    "download (use the bundled model/data, or a variable set after a network check)"
                )
    return problems


def _opens_exercise(line: str) -> bool:
    """'🌱 **Warm-up.** ...' or '### 🌿 Exercise 2': a line that starts with a grade mark (a
    sentence that merely mentions the marks, like the welcome notebook's legend, does not)."""
    return line.lstrip("#*->_ \t").startswith(EXERCISE_MARKS)


def _checker_names(nb: dict) -> set[str]:
    """Names bound by importing from peftlab.course.exercises: checkers, submodules or the module."""
    names: set[str] = set()
    for _, cell in _code_cells(nb):
        tree = _parse(_source(cell))
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == EXERCISES_MODULE or node.module.startswith(EXERCISES_MODULE + "."):
                    names.update(a.asname or a.name for a in node.names)
                elif node.module == "peftlab":
                    names.update(a.asname or a.name for a in node.names if a.name == "exercises")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == EXERCISES_MODULE or a.name.startswith(EXERCISES_MODULE + "."):
                        names.add(a.asname or a.name.split(".")[0])
    return names


def _calls_checker(cell: dict, names: set[str]) -> bool:
    tree = _parse(_source(cell))
    if tree is None:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in names:
            return True
        if isinstance(f, ast.Attribute):
            dotted = ast.unparse(f.value)
            root = dotted.split(".")[0]
            if root in names and (root != "peftlab" or dotted.startswith(EXERCISES_MODULE)):
                return True
    return False


def check_exercise_checkers(nb: dict) -> list[str]:
    """Every exercise (a Markdown line starting with 🌱/🌿/🌳) is followed, before the next
    exercise, by a code cell that calls a checker imported from peftlab.course.exercises."""
    names = _checker_names(nb)
    problems = []
    open_exercise: str | None = None
    satisfied = True

    def close():
        if open_exercise is not None and not satisfied:
            problems.append(
                f"exercise {open_exercise!r} has no checker call (from {EXERCISES_MODULE})"
            )

    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _source(cell).splitlines():
                if _opens_exercise(line):
                    close()
                    open_exercise, satisfied = line.strip("#*->_ \t")[:60], False
        elif cell.get("cell_type") == "code" and open_exercise is not None:
            satisfied = satisfied or _calls_checker(cell, names)
    close()
    return problems


_CHECK_OUTPUT = re.compile(r"^\s*#\s*NBVAL_CHECK_OUTPUT", re.MULTILINE)


def check_checked_cells_without_semicolon(nb: dict) -> list[str]:
    """nbval shows a result even after a trailing `;`, so a checked cell ending in one would
    differ from its stored output; write `_ = ...` instead."""
    problems = []
    for i, cell in _code_cells(nb):
        src = _source(cell)
        lines = [ln for ln in src.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if _CHECK_OUTPUT.search(src) and lines and lines[-1].rstrip().endswith(";"):
            problems.append(f"cell {i}: NBVAL_CHECK_OUTPUT cell ends with ';' (use `_ = ...`)")
    return problems


_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{6,}")


def check_no_memory_addresses(nb: dict) -> list[str]:
    problems = []
    for i, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                continue
            texts = [out.get("text", "")] + list(out.get("data", {}).get("text/plain", []))
            text = "".join("".join(t) if isinstance(t, list) else t for t in texts)
            if _ADDRESS.search(text):
                problems.append(f"cell {i}: output shows a memory address (non-deterministic)")
                break
    return problems


def check_notebook_dict(nb: dict, notebook_dir: Path | None = None) -> list[str]:
    problems = check_schema(nb) + check_kernelspec(nb)
    for check in (
        check_execution_order,
        check_no_errors,
        check_syntax,
        check_has_assert,
        check_checked_cells_without_semicolon,
        check_no_memory_addresses,
        check_exercise_checkers,
    ):
        problems += check(nb)
    problems += check_no_hub_ids(nb, notebook_dir)
    return problems


def check_notebook_bytes(raw: bytes, notebook_dir: Path | None = None) -> list[str]:
    problems = check_size(len(raw))
    try:
        nb = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return problems + [f"not valid JSON: {e}"]
    if not isinstance(nb, dict):
        return problems + ["not a notebook: top level is not a JSON object"]
    return problems + check_notebook_dict(nb, notebook_dir)


# --------------------------------------------------------------------------- the real notebooks

PATHS = notebook_paths()


@pytest.mark.parametrize("path", PATHS, ids=[str(p.relative_to(NOTEBOOK_DIR)) for p in PATHS])
def test_notebook_hygiene(path: Path):
    problems = check_notebook_bytes(path.read_bytes(), path.parent)
    assert not problems, f"{path.relative_to(REPO)}:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- the checks can fail


def _good_notebook() -> dict:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("import math\n%matplotlib inline", execution_count=1),
        nbformat.v4.new_code_cell(""),
        nbformat.v4.new_code_cell(
            "# NBVAL_CHECK_OUTPUT\nx = math.sqrt(4)\nx",
            execution_count=2,
            outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2.0"}, execution_count=2)],
        ),
        nbformat.v4.new_code_cell("assert x == 2", execution_count=3),
        nbformat.v4.new_code_cell(
            'from transformers import AutoModel\nm = AutoModel.from_pretrained("../data/models/x")\n'
            'import datasets\nds = datasets.load_dataset("json", data_files="d.jsonl")\n'
            'm.save_pretrained("adapters/demo")\nm2 = PeftModel.from_pretrained(m, "adapters/demo")',
            execution_count=4,
        ),
        nbformat.v4.new_markdown_cell(
            "## Exercises\nGraded 🌱 warm-up, 🌿 practice, 🌳 stretch.\n\n"
            "🌱 **Warm-up.** Count the parameters."
        ),
        nbformat.v4.new_code_cell("def my_count(m):\n    ...  # your code here", execution_count=5),
        nbformat.v4.new_code_cell(
            "from peftlab.course.exercises import nb99 as exercises\nexercises.check_count(my_count)",
            execution_count=6,
        ),
        nbformat.v4.new_markdown_cell("### 🌿 Exercise 2"),
        nbformat.v4.new_code_cell(
            "from peftlab.course.exercises.nb99 import check_other\ncheck_other(None)", execution_count=7
        ),
    ]
    return json.loads(nbformat.writes(nb))


def test_good_notebook_passes():
    nb = _good_notebook()
    assert check_notebook_bytes(json.dumps(nb).encode()) == []


def _problems_after(mutate) -> list[str]:
    nb = _good_notebook()
    mutate(nb)
    return check_notebook_dict(nb)


def _code(nb: dict, k: int) -> dict:
    return _code_cells(nb)[k][1]


def test_checks_catch_bad_json_and_size():
    assert any("not valid JSON" in p for p in check_notebook_bytes(b"{not json"))
    big = json.dumps(_good_notebook()).encode() + b" " * MAX_BYTES
    assert any("over the 2 MB limit" in p for p in check_notebook_bytes(big))


def test_checks_catch_schema_violation():
    def mutate(nb):
        nb["cells"][0]["cell_type"] = "bogus"

    assert any("not a valid nbformat" in p for p in _problems_after(mutate))


def test_checks_catch_wrong_kernel():
    def mutate(nb):
        nb["metadata"]["kernelspec"]["name"] = "conda-env-foo-py"

    assert any("kernelspec name" in p for p in _problems_after(mutate))


def test_checks_catch_out_of_order_execution():
    def mutate(nb):
        _code(nb, 2)["execution_count"] = 7
        _code(nb, 2)["outputs"][0]["execution_count"] = 7

    assert any("expected 2" in p for p in _problems_after(mutate))


def test_checks_catch_outputs_without_execution_count():
    def mutate(nb):
        _code(nb, 2)["execution_count"] = None

    assert any("no execution count" in p for p in _problems_after(mutate))


def test_checks_catch_error_output():
    def mutate(nb):
        _code(nb, 3)["outputs"] = [
            nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[])
        ]

    assert any("stored error output AssertionError" in p for p in _problems_after(mutate))


def test_checks_catch_missing_assert():
    def mutate(nb):
        _code(nb, 3)["source"] = "print(x == 2)"

    assert any("no `assert`" in p for p in _problems_after(mutate))


def test_checks_catch_hub_ids():
    def mutate(nb):
        _code(nb, 4)["source"] = (
            'm = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B")\n'
            'tok = AutoTokenizer.from_pretrained(pretrained_model_name_or_path="gpt2")\n'
            'ds = load_dataset("imdb")\n'
            'p = PeftModel.from_pretrained(m, "someone/lora-adapter")'
        )

    problems = _problems_after(mutate)
    assert any("'Qwen/Qwen2.5-0.5B'" in p for p in problems)
    assert any("'gpt2'" in p for p in problems)
    assert any("load_dataset('imdb')" in p for p in problems)
    assert any("'someone/lora-adapter'" in p for p in problems)


def test_checks_catch_missing_checker():
    def mutate(nb):
        _code(nb, 7)["source"] = "print('done')"  # exercise 2 no longer calls its checker

    problems = _problems_after(mutate)
    assert any("Exercise 2" in p and "no checker" in p for p in problems)
    assert not any("Warm-up" in p for p in problems)


def test_checks_catch_semicolon_in_checked_cell():
    def mutate(nb):
        _code(nb, 2)["source"] = "# NBVAL_CHECK_OUTPUT\nx = math.sqrt(4)\nx;"

    assert any("ends with ';'" in p for p in _problems_after(mutate))


def test_checks_catch_memory_address():
    def mutate(nb):
        _code(nb, 2)["outputs"][0]["data"]["text/plain"] = "<Foo object at 0x7f3a2b1c4d50>"

    assert any("memory address" in p for p in _problems_after(mutate))


def test_checks_catch_syntax_error():
    def mutate(nb):
        _code(nb, 0)["source"] = "def broken(:\n    pass"

    assert any("does not parse" in p for p in _problems_after(mutate))
