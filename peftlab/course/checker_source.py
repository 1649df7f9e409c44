"""The exercises' checkers as the graded edition sees them, read from their source (nothing is imported).

A checker is a `check_*` function of a module in peftlab/course/exercises/. Its docstring opens with the
exercise's level (🌱 🌿 🌳). One that reaches `judge_prediction` (itself or through a helper of its module),
or takes a `prediction`, says in its line what was measured: in a graded notebook that line would give the
outcome away.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

EXERCISES_PACKAGE = "peftlab.course.exercises"
EXERCISES_DIR = Path(__file__).resolve().parent / "exercises"
LEVELS = {"🌱": "warm-up", "🌿": "practice", "🌳": "stretch"}
PREDICTION_PARAMETERS = ("prediction", "predictions")


class PairingError(ValueError):
    """An exercise that cannot be paired with its solution, or a checker that cannot be read."""


@dataclass(frozen=True)
class Checker:
    module: str                 # peftlab.course.exercises.nb05_lora_variants
    name: str                   # check_dora_sign
    level: str                  # 🌿
    title: str                  # the docstring's first line
    parameters: tuple[str, ...]
    judges: bool                # reaches judge_prediction

    @property
    def predicts(self) -> bool:
        """Its line says the outcome of a prediction (or a diagnosis): a graded notebook must not show it."""
        return self.judges or bool(set(self.parameters) & set(PREDICTION_PARAMETERS))


def _reaches(start: str, calls: dict[str, set[str]], target: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        if current == target:
            return True
        if current not in seen:
            seen.add(current)
            todo += calls.get(current, ())
    return False


_checkers: dict[str, dict[str, Checker]] = {}


def checkers_of(module: str) -> dict[str, Checker]:
    """{name: Checker} for the `check_*` functions of an exercises module."""
    if module not in _checkers:
        path = EXERCISES_DIR / f"{module.rpartition('.')[2]}.py"
        if not module.startswith(EXERCISES_PACKAGE + ".") or not path.is_file():
            raise PairingError(f"{module} is not a checker module in {EXERCISES_DIR}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
        calls = {name: {c.func.id for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                 for name, f in functions.items()}
        found = {}
        for name, f in functions.items():
            if not name.startswith("check_"):
                continue
            doc = (ast.get_docstring(f) or "").strip()
            if doc[:1] not in LEVELS:
                raise PairingError(f"{module}.{name}: its docstring must open with the exercise's level, one of "
                                   f"{' '.join(LEVELS)}; it opens with {doc[:20]!r}")
            found[name] = Checker(module, name, doc[:1], doc.splitlines()[0], tuple(a.arg for a in f.args.args),
                                  _reaches(name, calls, "judge_prediction"))
        _checkers[module] = found
    return _checkers[module]


def checker_imports(trees: list[ast.Module]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """({alias: exercises module}, {function name: (module, checker)}) bound by a notebook's imports."""
    modules, functions = {}, {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == EXERCISES_PACKAGE:
                modules.update({a.asname or a.name: f"{EXERCISES_PACKAGE}.{a.name}" for a in node.names})
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(EXERCISES_PACKAGE + "."):
                functions.update({a.asname or a.name: (node.module, a.name) for a in node.names
                                  if a.name.startswith("check_")})
            elif isinstance(node, ast.Import):
                modules.update({a.asname: a.name for a in node.names
                                if a.asname and a.name.startswith(EXERCISES_PACKAGE + ".")})
    return modules, functions


def checker_call(node: ast.AST | None, imports) -> Checker | None:
    """The checker a call calls (`exercises.check_x(...)` or an imported `check_x(...)`); None for any other."""
    if not isinstance(node, ast.Call):
        return None
    modules, functions = imports
    f = node.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules \
            and f.attr.startswith("check_"):
        module, name = modules[f.value.id], f.attr
    elif isinstance(f, ast.Name) and f.id in functions:
        module, name = functions[f.id]
    else:
        return None
    found = checkers_of(module).get(name)
    if found is None:
        raise PairingError(f"{module} has no checker {name}")
    return found
