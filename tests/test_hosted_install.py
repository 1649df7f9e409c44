"""The README's install cell for hosted kernels (Colab, a JupyterHub without the course installed):
it does nothing where peftlab is installed (`make lab`, any offline classroom), installs the
checkout a notebook sits in, and on Colab, with no checkout, clones one first. Run with IPython's
own translation of `!` and `%pip`, against a stand-in shell that records what it was asked.
Where torch is missing it installs the torch the Makefile pins (PyPI's newest may be a CUDA build
of several GB)."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_00 = REPO / "notebooks" / "00_welcome.ipynb"


def install_cell() -> str:
    """The README's Python block that installs peftlab when it is missing."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    cells = [b for b in blocks if 'find_spec("peftlab")' in b]
    assert len(cells) == 1, "the README shows one install cell for hosted kernels"
    return cells[0]


class Shell:
    """What the cell asks IPython to run, with {name} expanded as IPython does."""

    def __init__(self):
        self.calls: list[str] = []

    def _expand(self, line: str) -> str:
        return line.format(**sys._getframe(2).f_globals)

    def system(self, cmd: str) -> None:
        self.calls.append("!" + self._expand(cmd))

    def run_line_magic(self, name: str, line: str, _stack_depth: int = 1) -> None:
        self.calls.append(f"%{name} {self._expand(line)}")


PUBLISHED = "https://git.example.org/course/peftlab.git"   # what an instructor puts in place of the placeholder


def run_cell(monkeypatch, cwd: Path, installed: bool, torch: bool = True,
             course_git: str = PUBLISHED) -> tuple[Shell, list[str]]:
    shell = Shell()
    cell = re.sub(r'COURSE_GIT = "[^"]*"', f'COURSE_GIT = "{course_git}"', install_cell(), count=1)
    code = TransformerManager().transform_cell(cell)
    missing = ({"peftlab"} if not installed else set()) | ({"torch"} if not torch else set())
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(code, "<install cell>", "exec"), {"get_ipython": lambda: shell})
    return shell, sys.path


def test_where_peftlab_is_installed_the_cell_does_nothing(monkeypatch, tmp_path, capsys):
    shell, path = run_cell(monkeypatch, tmp_path, installed=True)
    assert shell.calls == [] and capsys.readouterr() == ("", "")


def test_in_a_checkout_without_peftlab_the_cell_installs_that_checkout(monkeypatch, tmp_path):
    (tmp_path / "course" / "notebooks").mkdir(parents=True)
    (tmp_path / "course" / "pyproject.toml").write_text("[project]\nname = 'peftlab'\n")
    shell, path = run_cell(monkeypatch, tmp_path / "course" / "notebooks", installed=False)
    repo = (tmp_path / "course").resolve()
    assert shell.calls == [f"%pip install --quiet -e {repo}"]
    assert path[0] == str(repo)


def test_on_colab_the_cell_clones_the_course_then_installs_it(monkeypatch, tmp_path):
    content = tmp_path / "content"   # Colab's working folder: no checkout above it
    content.mkdir()
    shell, path = run_cell(monkeypatch, content, installed=False)
    repo = (content / "peftlab").resolve()
    assert len(shell.calls) == 2
    assert shell.calls[0] == f"!git clone --depth 1 {PUBLISHED} {repo}"
    assert shell.calls[1] == f"%pip install --quiet -e {repo}"
    assert path[0] == str(repo)


def test_on_colab_the_placeholder_address_stops_with_what_to_set(monkeypatch, tmp_path):
    placeholder = re.search(r'COURSE_GIT = "([^"]*)"', install_cell()).group(1)
    content = tmp_path / "content"
    content.mkdir()
    with pytest.raises(ValueError, match="set COURSE_GIT above"):
        run_cell(monkeypatch, content, installed=False, course_git=placeholder)


def test_without_torch_the_cell_installs_the_pinned_one_first(monkeypatch, tmp_path):
    (tmp_path / "course" / "notebooks").mkdir(parents=True)
    (tmp_path / "course" / "pyproject.toml").write_text("[project]\nname = 'peftlab'\n")
    shell, _ = run_cell(monkeypatch, tmp_path / "course" / "notebooks", installed=False, torch=False)
    pin = re.search(r"^TORCH \?= (\S+)$", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    assert shell.calls == [f"%pip install --quiet {pin}", f"%pip install --quiet -e {(tmp_path / 'course').resolve()}"]


def test_notebook_00_starts_with_the_readme_install_cell():
    import nbformat
    cells = [c for c in nbformat.read(NOTEBOOK_00, as_version=4).cells if c.cell_type == "code"]
    hosted = [i for i, c in enumerate(cells) if 'find_spec("peftlab")' in c.source]
    assert hosted == [0], "the install cell is notebook 00's first code cell, before anything imports peftlab"
    assert cells[0].source.strip() == install_cell().strip(), "notebook 00's install cell matches the README's"
