"""The three floors of peftlab, enforced: the library (`peftlab`), the workbook (`peftlab.workbook`)
and the course (`peftlab.course`). Imports point down only (course -> workbook -> library), no two
modules import each other in a circle, and no method file in peftlab/tuners/ imports another
method file (shared pieces live in shared modules). The rules are read from the source with `ast`,
so they hold for imports inside functions too; each rule is shown to fail on a synthetic module.
"""
import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = {0: "the library", 1: "the workbook", 2: "the course"}


def floor(module: str) -> int:
    if module == "peftlab.course" or module.startswith("peftlab.course."):
        return 2
    if module == "peftlab.workbook" or module.startswith("peftlab.workbook."):
        return 1
    return 0


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package `peftlab` under `root`."""
    files = {}
    for path in sorted((root / "peftlab").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The peftlab modules `module` imports, anywhere in its file (a name imported from a package
    counts as its submodule when there is one: `from peftlab.tuners import lora`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "peftlab"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "peftlab":
                continue
            subs = {f"{source}.{a.name}" for a in node.names} & known
            found |= subs or {source}
            if subs and len(subs) < len(node.names):
                found.add(source)
    return (found & known) - {module}


def method_modules(files: dict[str, Path]) -> set[str]:
    """Modules of peftlab/tuners/ that register a method (`@register_method` on a class)."""
    def registers(path: Path) -> bool:
        return any(isinstance(n, ast.ClassDef) and any(getattr(d, "id", getattr(d, "attr", None)) == "register_method"
                                                        for d in n.decorator_list)
                   for n in ast.walk(ast.parse(path.read_text())))
    return {m for m, p in files.items() if m.startswith("peftlab.tuners.") and registers(p)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def layering_problems(root: Path) -> list[str]:
    """What breaks the three rules in the package under `root`, in words (empty: nothing)."""
    files = module_files(root)
    graph = {m: imports_of(m, p, set(files)) for m, p in files.items()}
    methods = method_modules(files)
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if floor(target) > floor(module):
                problems.append(f"{module} ({FLOORS[floor(module)]}) imports {target} ({FLOORS[floor(target)]}), "
                                "a floor above it")
            if module in methods and target in methods:
                problems.append(f"method file {module} imports method file {target}: move what they share into a "
                                "shared module of peftlab/tuners/")
    problems += [f"import cycle: {' <-> '.join(group)}" for group in cycles(graph)]
    return problems


def test_imports_point_down_with_no_cycles_and_no_method_importing_another():
    assert layering_problems(REPO) == []


def test_the_three_floors_import_on_their_own():
    for package in ("peftlab", "peftlab.workbook", "peftlab.course"):
        result = subprocess.run([sys.executable, "-c", f"import {package}, sys; "
                                 "print(sorted(m for m in sys.modules if m.startswith('peftlab.')))"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        loaded = eval(result.stdout)
        if package == "peftlab":   # the library alone loads nothing of the floors above it
            assert not [m for m in loaded if floor(m) > 0], loaded


def fake_package(root: Path, modules: dict[str, str]) -> Path:
    for name, source in modules.items():
        path = root.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    for folder in {p.parent for p in root.rglob("*.py")}:
        (folder / "__init__.py").touch()
    return root


def test_the_check_fails_on_an_upward_import_a_cycle_and_a_method_importing_a_method(tmp_path):
    clean = fake_package(tmp_path / "clean", {
        "peftlab.model": "from peftlab.tuners import registry\n",
        "peftlab.tuners.registry": "",
        "peftlab.workbook.training": "from peftlab.model import x\n",
        "peftlab.course.viz": "from peftlab.workbook.training import train\n",
    })
    assert layering_problems(clean) == []

    upward = fake_package(tmp_path / "upward", {
        "peftlab.model": "def f():\n    from peftlab.workbook.zoo import BASE_MODEL\n",   # inside a function
        "peftlab.workbook.zoo": "from ..course import widgets\n",                          # relative
        "peftlab.course.widgets": "",
    })
    assert layering_problems(upward) == [
        "peftlab.model (the library) imports peftlab.workbook.zoo (the workbook), a floor above it",
        "peftlab.workbook.zoo (the workbook) imports peftlab.course.widgets (the course), a floor above it",
    ]

    circle = fake_package(tmp_path / "circle", {
        "peftlab.workbook.distributed": "from peftlab.workbook.check import run_check\n",
        "peftlab.workbook.check": "from peftlab.workbook import distributed\n",
    })
    assert layering_problems(circle) == [
        "import cycle: peftlab.workbook.check <-> peftlab.workbook.distributed"]

    methods = fake_package(tmp_path / "methods", {
        "peftlab.tuners.registry": "def register_method(cls):\n    return cls\n",
        "peftlab.tuners.targeting": "NORM_TYPES = ()\n",
        "peftlab.tuners.ln_tuning": "from .registry import register_method\n@register_method\nclass LN: ...\n",
        "peftlab.tuners.bitfit": ("from .registry import register_method\nfrom .targeting import NORM_TYPES\n"
                                  "from .ln_tuning import LN\n@register_method\nclass BitFit: ...\n"),
    })
    assert layering_problems(methods) == [
        "method file peftlab.tuners.bitfit imports method file peftlab.tuners.ln_tuning: move what they share "
        "into a shared module of peftlab/tuners/"]


# A method written the way a new contributor would, in its own file only: a rank-1 update u v^T
# with u starting at zero (so the adapted model starts as the base), merged like any additive method.
SCRATCH_METHOD = '''
"""Rank-one adaptation: y = W x + u (v . x), u starting at zero (a scratch method for the layering test)."""
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .layer import BaseTunerLayer
from .layer_config import LayerMethodConfig
from .layer_tuner import LayerTuner
from .registry import register_method


@dataclass
class RankOneConfig(LayerMethodConfig):
    peft_type: ClassVar[str] = "RANK_ONE"


class RankOneLayer(BaseTunerLayer):
    adapter_layer_names = ("rank_one_u", "rank_one_v")

    def __init__(self, base_layer, module_name=""):
        super().__init__(base_layer, module_name)
        self.rank_one_u, self.rank_one_v = nn.ParameterDict(), nn.ParameterDict()

    def update_layer(self, name, config):
        out_features, in_features = self.get_base_weight().shape
        where = {"dtype": self.compute_dtype, "device": self.base_device}
        self.rank_one_u[name] = nn.Parameter(torch.zeros(out_features, 1, **where))
        self.rank_one_v[name] = nn.Parameter(torch.randn(1, in_features, **where) / in_features ** 0.5)

    def get_delta_weight(self, name):
        return self.rank_one_u[name] @ self.rank_one_v[name]


@register_method
class RankOneModel(LayerTuner):
    config_class = RankOneConfig
    layers = {nn.Linear: RankOneLayer, Conv1D: RankOneLayer}
'''
SCRATCH_ROW = ('    "rank_one": Row(lambda lib, arch: lib.RankOneConfig(target_modules=LINEAR_TARGETS[arch], '
               '**task(arch)), LAYER_ARCHS, in_peft=False),\n')


@pytest.mark.slow
def test_a_new_method_is_one_file_plus_one_conformance_row(tmp_path):
    """Copy the package and the tests, add the method's file and its row, change nothing else, and
    run the conformance table on it: every invariant on every architecture, saving and loading by
    its peft_type, exported from `peftlab` under its own names."""
    shutil.copytree(REPO / "peftlab", tmp_path / "peftlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copy(REPO / "conftest.py", tmp_path)
    (tmp_path / "peftlab" / "tuners" / "rank_one.py").write_text(SCRATCH_METHOD)
    rows = tmp_path / "tests" / "conformance_rows.py"
    rows.write_text(rows.read_text().replace("\nROWS = {\n", "\nROWS = {\n" + SCRATCH_ROW, 1))

    changed = subprocess.run(["diff", "-rq", str(REPO / "peftlab"), str(tmp_path / "peftlab"), "-x", "__pycache__"],
                             capture_output=True, text=True).stdout.splitlines()
    assert changed == [f"Only in {tmp_path / 'peftlab' / 'tuners'}: rank_one.py"]

    env = {"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import peftlab; print(peftlab.__file__, peftlab.RankOneConfig)"],
                           cwd=tmp_path, capture_output=True, text=True, env=_env(env), timeout=120)
    assert where.stdout.startswith(str(tmp_path / "peftlab")), where.stdout + where.stderr
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                             "tests/test_conformance.py", "-k", "rank_one or every_registered_method"],
                            cwd=tmp_path, capture_output=True, text=True, env=_env(env), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = int(result.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 40, result.stdout[-500:]   # identity, merge, unmerge, disable, training, save/load... x 7 archs


def _env(extra: dict) -> dict:
    return os.environ | extra
