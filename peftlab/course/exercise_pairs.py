"""Each exercise of a notebook paired with its reference solution, read from the code of the two notebooks.

One rule for every notebook, so a new notebook needs nothing here:

- An exercise is a code cell of the notebook with a top-level call of a checker: `exercises.check_x(...)`,
  a `check_*` function of a module in peftlab/course/exercises/. The statements above the call are the
  stub; the call is the check, and it comes last in its cell.
- Its reference is in the solutions notebook: the code cells after the previous checked cell, up to
  the cell that asserts the same checker (`assert exercises.check_x(...)`), without that assert.
  The solutions' first code cell, when it checks nothing, is their setup: a reference starts with the
  setup statements that define what it uses (imports cut down to the names used, and skipped where
  the notebook already imports the same), each written once, in the first exercise that needs it.
- Where the reference hands the checker something else than the stub's variable (`k_full` for
  `measured_full_99`), the variable is set to it, so the notebook's own check call sees the answer.
- The checker's docstring opens with the exercise's level (🌱 🌿 🌳). An exercise whose checker reaches
  `judge_prediction` and gets from the stub more than one answer is a prediction judged against the
  learner's own measurement; a checker that judges a prediction or a diagnosis otherwise (it measures by
  itself, or takes a `prediction`) is graded whole (Pair.kind).

Anything that breaks the rule raises PairingError, naming the notebook and the checker: a stub without
its solution, a solution without its stub, a reference that never sets a stub's variable, or one that
uses a name no earlier cell defines.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from peftlab.course.checker_source import Checker, PairingError, checker_call, checker_imports
from peftlab.course.code_names import (
    alias_line,
    bound_names,
    import_lines,
    imports_in,
    needed_names,
    parse,
    statement_lines,
    top_level_bound,
)


@dataclass
class Pair:
    checker: Checker
    cell: int                   # index of the stub's cell in the notebook
    stub: str                   # the statements above the check call
    function: str               # the checked function as the notebook calls it: "exercises.check_dora_sign"
    arguments: str              # the call's arguments as written, parentheses included
    answers: tuple[str, ...]    # the stub's variables the call hands the checker
    reference: str = ""         # the solution's code, for the stub's place
    setup: list[str] = field(default_factory=list)   # solution setup lines this reference needs first

    @property
    def kind(self) -> str:
        """How it is graded: "judged" (a prediction and the learner's own measurement, graded apart: the
        checker reaches judge_prediction and gets more than the prediction from the stub), "sealed" (a
        prediction or diagnosis whose checker's line tells the outcome, graded whole) or "plain"."""
        if self.checker.judges and len(self.answers) > 1:
            return "judged"
        return "sealed" if self.checker.predicts else "plain"


def cell_source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _code_cells(nb) -> list[tuple[int, str]]:
    return [(i, cell_source(c)) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


def _parse(source: str, where: str) -> ast.Module:
    try:
        return parse(source)
    except SyntaxError as error:
        raise PairingError(f"{where}: a code cell does not parse ({error.msg}, line {error.lineno})") from None


def find_stubs(nb, where: str) -> list[Pair]:
    """The notebook's exercises, in notebook order."""
    cells = [(i, src, _parse(src, where)) for i, src in _code_cells(nb)]
    imports = checker_imports([tree for _, _, tree in cells])
    pairs = []
    for i, src, tree in cells:
        checks = [(k, stmt) for k, stmt in enumerate(tree.body)
                  if isinstance(stmt, ast.Expr) and checker_call(stmt.value, imports)]
        if not checks:
            continue
        (k, stmt), *more = checks
        checker = checker_call(stmt.value, imports)
        if more or k != len(tree.body) - 1:
            raise PairingError(f"{where}, cell {i}: the call of {checker.name} must be the last statement of its "
                               "cell, and the only checker call in it")
        call = stmt.value
        function = ast.get_source_segment(src, call.func)
        text = ast.get_source_segment(src, call)
        stub = "\n".join(src.splitlines()[:stmt.lineno - 1]).rstrip()
        given = {n.id for n in ast.walk(call) if isinstance(n, ast.Name)}
        answers = tuple(sorted(given & top_level_bound(_parse(stub, where))))
        pairs.append(Pair(checker, i, stub, function, text[len(function):], answers))
    names = [p.checker.name for p in pairs]
    if len(set(names)) != len(names):
        raise PairingError(f"{where}: a checker is called by two exercise cells: {sorted(names)}")
    return pairs


@dataclass
class _Segment:
    checker: Checker
    call: ast.Call              # the solution's check call
    source: str                 # the reference code
    tree: ast.Module


def find_solutions(nb, where: str) -> tuple[list[ast.stmt], str, dict[str, _Segment]]:
    """(setup statements, setup source, {checker name: reference}) of a solutions notebook."""
    cells = [(i, src, _parse(src, where)) for i, src in _code_cells(nb)]
    imports = checker_imports([tree for _, _, tree in cells])

    def asserted(stmt):
        test = stmt.test if isinstance(stmt, ast.Assert) else stmt.value if isinstance(stmt, ast.Expr) else None
        return checker_call(test, imports) if test is not None else None

    setup, setup_source = [], ""
    if cells and not any(asserted(s) for s in cells[0][2].body):
        setup, setup_source = cells[0][2].body, cells[0][1]
        cells = cells[1:]
    segments, pending = {}, []
    for i, src, tree in cells:
        checks = [s for s in tree.body if asserted(s)]
        if not checks:
            pending.append(src)
            continue
        if len(checks) > 1:
            raise PairingError(f"{where}, cell {i}: one checker per solution cell ({len(checks)} here)")
        stmt = checks[0]
        checker = asserted(stmt)
        first, last = statement_lines(stmt)
        lines = src.splitlines()
        own = "\n".join(lines[:first] + lines[last:])
        code = "\n\n".join(part.strip("\n") for part in pending + [own] if part.strip())
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("# NBVAL_"))
        if checker.name in segments:
            raise PairingError(f"{where}: two solution cells assert {checker.name}")
        segments[checker.name] = _Segment(checker, stmt.test if isinstance(stmt, ast.Assert) else stmt.value,
                                          code.strip("\n"), _parse(code, where))
        pending = []
    return setup, setup_source, segments


def pair(nb, solutions, where: str) -> list[Pair]:
    """The notebook's exercises, each with its reference; raises PairingError where the rule breaks."""
    stubs = find_stubs(nb, where)
    setup, setup_source, segments = find_solutions(solutions, where + " solutions")
    missing = [p.checker.name for p in stubs if p.checker.name not in segments]
    if missing:
        raise PairingError(f"{where}: no solution asserts {missing}: the solutions notebook needs a cell "
                           f"`assert exercises.{missing[0]}(...)` with the reference answer")
    extra = sorted(set(segments) - {p.checker.name for p in stubs})
    if extra:
        raise PairingError(f"{where}: the solutions assert {extra}, which no exercise cell of the notebook calls")
    setup_bound = [top_level_bound(ast.Module(body=[s], type_ignores=[])) for s in setup]
    setup_needs = [needed_names(s) for s in setup]
    main_trees = {i: _parse(src, where) for i, src in _code_cells(nb)}
    defined_by = {name: p.checker.name for p in stubs for name in bound_names(segments[p.checker.name].tree)}
    placed: set[str] = set()
    written_setup: set[int] = set()
    written_imports: set[str] = set()
    for p in stubs:
        segment = segments[p.checker.name]
        before = [tree for i, tree in main_trees.items() if i < p.cell]
        stub_tree = _parse(p.stub, where)
        stub_vars = top_level_bound(stub_tree)
        known = set().union(*(bound_names(t) for t in before)) | bound_names(stub_tree)
        # the setup statements this reference needs, and what those need in turn
        wanted, chosen = needed_names(segment.tree), set()
        grew = True
        while grew:
            grew = False
            for k, names in enumerate(setup_bound):
                if k not in chosen and names & wanted:
                    chosen.add(k)
                    wanted |= setup_needs[k]
                    grew = True
        provided = set().union(*(setup_bound[k] for k in chosen)) | bound_names(segment.tree)
        for name in sorted(needed_names(segment.tree) - provided - known):
            owner = defined_by.get(name)
            if owner is None or owner not in placed:
                later = f"; the solution of {owner} defines it, but that exercise comes later" if owner else ""
                raise PairingError(f"{where}: the solution of {p.checker.name} uses `{name}`, which nothing before "
                                   f"it defines{later}")
        skip = imports_in(before) | written_imports
        for k in sorted(chosen - written_setup):
            stmt = setup[k]
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                lines = import_lines(stmt, wanted, skip)
                written_imports |= {alias_line(stmt, a) for a in stmt.names}
            else:
                first, last = statement_lines(stmt)
                lines = setup_source.splitlines()[first:last]
                written_setup.add(k)
            p.setup += lines
        p.reference = segment.source + _argument_bindings(p, segment, stub_vars, main_trees[p.cell])
        missing_vars = stub_vars - bound_names(_parse(p.reference, where)) - provided
        if missing_vars:
            raise PairingError(f"{where}: the solution of {p.checker.name} never sets {sorted(missing_vars)}, which "
                               "the exercise's stub asks for")
        placed.add(p.checker.name)
    return stubs


def _argument_bindings(p: Pair, segment: _Segment, stub_vars: set[str], cell_tree: ast.Module) -> str:
    """`name = <the solution's argument>` for each stub variable the solution passes under another name."""
    call = cell_tree.body[-1].value
    ours = list(enumerate(call.args)) + [(k.arg, k.value) for k in call.keywords]
    theirs = dict(enumerate(segment.call.args)) | {k.arg: k.value for k in segment.call.keywords}
    lines = []
    for key, argument in ours:
        if isinstance(argument, ast.Name) and argument.id in stub_vars and key in theirs:
            given = ast.unparse(theirs[key])
            if given != argument.id:
                lines.append(f"{argument.id} = {given}")
    return "".join("\n" + line for line in lines)
