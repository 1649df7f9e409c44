"""Where the generated data lives on disk, how it is written and how it is loaded."""
import json
from pathlib import Path

from datasets import Dataset, DatasetDict

from .corpus import generate_corpus
from .tasks import capitals_task, records_task, sentiment_task

# data/ sits next to the package in the repository (editable install).
DATA_DIR = Path(__file__).resolve().parents[3] / "data"

CORPUS_SIZES = {"n_train": 60_000, "n_heldout": 2_000}
TASKS = {"sentiment": sentiment_task, "capitals": capitals_task, "records": records_task}
SEEDS = {"corpus": 0, "sentiment": 1, "capitals": 2, "records": 3}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing. Regenerate the bundled data with "
                                f"`python -m peftlab.workbook.data --out {DATA_DIR}`.")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_all(out: Path) -> list[Path]:
    """Generate every data file into `out` (deterministic: same bytes on every run)."""
    out, written = Path(out), []
    for split, rows in generate_corpus(seed=SEEDS["corpus"], **CORPUS_SIZES).items():
        written.append(out / "corpus" / f"{split}.jsonl")
        _write_jsonl(written[-1], rows)
    for name, make in TASKS.items():
        for split, rows in make(seed=SEEDS[name]).items():
            written.append(out / "tasks" / name / f"{split}.jsonl")
            _write_jsonl(written[-1], rows)
    return written


def load_corpus(data_dir: Path = DATA_DIR) -> DatasetDict:
    """The pretraining corpus: `train` and `heldout` (same distribution, used to measure forgetting)."""
    return DatasetDict({split: Dataset.from_list(_read_jsonl(Path(data_dir) / "corpus" / f"{split}.jsonl"))
                        for split in ("train", "heldout")})


def load_task(name: str, data_dir: Path = DATA_DIR) -> DatasetDict:
    """A task as train / validation / test, each row with `prompt` and `target`."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}. Available tasks: {', '.join(TASKS)}.")
    return DatasetDict({split: Dataset.from_list(_read_jsonl(Path(data_dir) / "tasks" / name / f"{split}.jsonl"))
                        for split in ("train", "validation", "test")})
