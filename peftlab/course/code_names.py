"""What a piece of notebook code binds and what it needs from the cells before it, read with `ast`.

The graded edition (peftlab.course.exercise_pairs) moves a solution's code into the notebook it solves;
these answer the questions that move raises: which names does it use that it does not define, which
setup statements define them, and which imports the notebook already has.
"""
from __future__ import annotations

import ast
import builtins

BUILTINS = set(dir(builtins))


def parse(source: str) -> ast.Module:
    """A cell's code; IPython magics become calls first, the other lines stay as they are."""
    try:
        return ast.parse(source)
    except SyntaxError:
        from IPython.core.inputtransformer2 import TransformerManager
        return ast.parse(TransformerManager().transform_cell(source))


def bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds anywhere (assignments, definitions, imports, arguments, loop targets)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias) and node.name != "*":
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def needed_names(tree: ast.AST) -> set[str]:
    """Names the code reads but never binds itself, builtins aside: what must come from before it."""
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return loaded - bound_names(tree) - BUILTINS


def top_level_bound(tree: ast.Module) -> set[str]:
    """The names the module's own statements bind (not the arguments of the functions it defines)."""
    names = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With, ast.Import,
                               ast.ImportFrom)):
            names |= bound_names(stmt) - {a.arg for a in ast.walk(stmt) if isinstance(a, ast.arg)}
    return names


def statement_lines(stmt: ast.stmt) -> tuple[int, int]:
    """The 0-based [first, last) line range of a statement, its decorators included."""
    first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
    return first - 1, stmt.end_lineno


def alias_line(stmt: ast.Import | ast.ImportFrom, alias: ast.alias) -> str:
    """One imported name as a line that compares equal wherever the same name is imported the same way."""
    bound = alias.asname or alias.name
    if isinstance(stmt, ast.ImportFrom):
        return f"from {'.' * stmt.level}{stmt.module or ''} import {alias.name} as {bound}"
    return f"import {alias.name} as {bound}"


def imports_in(trees: list[ast.Module]) -> set[str]:
    """Every name the code imports, as alias_line writes it."""
    return {alias_line(node, a) for tree in trees for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}


def import_lines(stmt: ast.Import | ast.ImportFrom, wanted: set[str], skip: set[str]) -> list[str]:
    """The import statement cut down to the names in `wanted`, less those imported as in `skip`."""
    kept = [a for a in stmt.names if (a.asname or a.name).split(".")[0] in wanted and alias_line(stmt, a) not in skip]
    if not kept:
        return []
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in kept)
    if isinstance(stmt, ast.ImportFrom):
        return [f"from {'.' * stmt.level}{stmt.module or ''} import {names}"]
    return [f"import {names}"]
