"""The README and docs/ describe what is in the repository: every relative link and every
`path` they name exists, and nothing points outside the repository."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A code span that names a file or folder of the repository ("tuners/lora.py", "benchmarks/").
PATH_SPAN = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|md|json|cfg|toml)|[\w.-]+/)`")
SEARCHED = ["", "peftlab", "peftlab/tuners", "peftlab/workbook", "peftlab/course",
            "tests", "docs", "benchmarks", "data", "notebooks"]


def named_paths(text: str) -> set[str]:
    links = {m for m in re.findall(r"\]\(([^)#]+)\)", text) if not m.startswith(("http://", "https://"))}
    return links | set(PATH_SPAN.findall(text))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_what_exists_inside_the_repository(doc):
    text = doc.read_text()
    assert "../" not in text, "a document points outside the repository"
    missing = [p for p in named_paths(text)
               if not any((REPO / base / p).exists() or (doc.parent / p).exists() for base in SEARCHED)]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"
