"""The bundled data: deterministic, within size, formats kept apart, loadable through `datasets`."""
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import DatasetDict

from peftlab.workbook.data import COUNTRIES, DATA_DIR, TASKS, load_corpus, load_task
from peftlab.workbook.data.manifest import compute_manifest, read_manifest


def test_regeneration_is_byte_identical(tmp_path):
    subprocess.run([sys.executable, "-m", "peftlab.workbook.data", "--out", str(tmp_path)], check=True,
                   capture_output=True)
    generated = compute_manifest(tmp_path)
    committed = {k: v for k, v in read_manifest().items() if not k.startswith("models/")}
    assert generated == committed


def test_manifest_matches_every_bundled_file():
    assert compute_manifest() == read_manifest()


def test_data_folder_is_small():
    total = sum(p.stat().st_size for p in Path(DATA_DIR).rglob("*") if p.is_file())
    assert total < 30 * 2**20, f"data/ is {total / 2**20:.1f} MiB"


def test_loaders_return_dataset_dicts():
    corpus = load_corpus()
    assert isinstance(corpus, DatasetDict) and set(corpus) == {"train", "heldout"}
    assert len(corpus["train"]) > 10 * len(corpus["heldout"]) > 0
    for name in TASKS:
        task = load_task(name)
        assert set(task) == {"train", "validation", "test"}
        assert {"prompt", "target"} <= set(task["train"].column_names)


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(ValueError, match="sentiment"):
        load_task("sentimnet")


@pytest.mark.parametrize("marker", ["Sentiment :", "question :", "? answer", "fields :", "sentence :"])
def test_task_formats_never_occur_in_the_corpus(marker):
    corpus = load_corpus()
    for split in corpus.values():
        assert not any(marker in text for text in split["text"])


def test_every_task_word_occurs_in_the_corpus():
    words = {w for text in load_corpus()["train"]["text"] for w in text.split()}
    for name in TASKS:
        for split in load_task(name).values():
            for row in split:
                assert set((row["prompt"] + row["target"]).split()) <= words, row


def test_capitals_splits_hold_different_countries():
    task = load_task("capitals")
    seen = [set(task[s]["country"]) for s in ("train", "validation", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert set.union(*seen) == {c for c, _, _ in COUNTRIES}


def test_every_fact_is_stated_in_the_corpus():
    text = " ".join(load_corpus()["train"]["text"])
    for country, capital, _ in COUNTRIES:
        assert f"The capital of {country} is {capital} ." in text


def test_sentiment_is_balanced_and_uses_contrast():
    test = load_task("sentiment")["test"]
    positive = sum(test["label"]) / len(test)
    assert 0.4 < positive < 0.6
    assert sum(" but " in p for p in test["prompt"]) > 0.25 * len(test)
