"""Every learning rate stored in results/ was chosen inside its grid: a rate chosen at the edge says the
grid was wrong (the best rate may lie beyond it), and a comparison at such a rate is not at each
method's best. A row with a grid of one rate took its rate from another row, and says which."""
import json
from pathlib import Path

import pytest

from peftlab.course.experiments.protocol import RESULTS_DIR, is_interior

STORED = sorted(RESULTS_DIR.glob("*.json"))


def rows_with_a_grid(node, where=""):
    """(place, row) for every dict in a stored file that records a learning-rate search."""
    if isinstance(node, dict):
        if "validation_by_lr" in node:
            yield where, node
        for key, value in node.items():
            yield from rows_with_a_grid(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from rows_with_a_grid(value, f"{where}[{i}]")


def test_there_are_stored_searches_to_check():
    assert sum(1 for path in STORED for _ in rows_with_a_grid(json.loads(path.read_text()))) >= 50


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_every_stored_rate_is_interior_to_its_grid(path: Path):
    stored = json.loads(path.read_text())
    for where, row in rows_with_a_grid(stored):
        grid = sorted(float(lr) for lr in row["validation_by_lr"])
        if len(grid) == 1:
            source = row.get("rate_from")
            assert source in stored, f"{path.name}{where}: a grid of one rate must say which part chose it"
            continue
        assert is_interior(row), (f"{path.name}{where}: lr {row['lr']:g} is at the edge of {grid}; widen the "
                                  "grid (or let protocol.pick_rate grow it) and re-run the experiment")


def test_the_check_finds_an_edge():
    row = {"lr": 0.1, "validation_by_lr": {"0.1": [0.9], "0.3": [0.8], "1.0": [0.5]}}
    assert not is_interior(row) and list(rows_with_a_grid({"a": [row]})) == [("/a[0]", row)]
