"""Real images, no download: the handwritten digits that ship inside scikit-learn.

`sklearn.datasets.load_digits()` holds 1,797 grey-scale images of 8 x 8 pixels, each pixel a
count from 0 to 16: the test part of the UCI "Optical Recognition of Handwritten Digits" data
(Alpaydin and Kaynak, 1998), 43 writers' digits scanned and block-averaged.
peftlab cuts it into two tasks that share no image and no class, the transfer-learning setting:

- "digits_0_4": the digits 0-4, what the bundled vision model is pretrained on;
- "digits_5_9": the digits 5-9, the new task it is adapted to (label = digit - 5).

Each is a `datasets.DatasetDict` with train / validation / test (60 / 20 / 20% of every class,
a seeded shuffle), each row {"pixels": 8 x 8 ints in 0..16, "label", "digit"}. Nothing is written
to data/: the images are read from the installed package, so the splits are a pure function of
the seed and scikit-learn's file, and the tests pin their size and content.
"""
import numpy as np
from datasets import Dataset, DatasetDict

IMAGE_TASKS = {"digits_0_4": (0, 1, 2, 3, 4), "digits_5_9": (5, 6, 7, 8, 9)}
SPLITS = {"train": 0.6, "validation": 0.2, "test": 0.2}
PIXEL_MAX = 16          # the data's brightest pixel
SPLIT_SEED = 0


def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images (N, 8, 8) as uint8 in 0..16 and their digits (N,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:   # a dependency of peftlab: only a broken install lacks it
        raise ImportError("The image tasks read scikit-learn's bundled digits; install it with "
                          "`pip install scikit-learn` (or reinstall peftlab: `pip install -e .`).") from error
    data = load_digits()
    return data.images.astype(np.uint8), data.target.astype(np.int64)


def split_indices(targets: np.ndarray, classes: tuple[int, ...], seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """Indices of each split: every class shuffled with `seed` and cut 60 / 20 / 20, so each split
    holds every class in the same proportions (stratified)."""
    rng = np.random.default_rng(seed)
    out = {split: [] for split in SPLITS}
    for digit in classes:
        ids = rng.permutation(np.flatnonzero(targets == digit))
        n_train, n_val = round(SPLITS["train"] * len(ids)), round(SPLITS["validation"] * len(ids))
        parts = {"train": ids[:n_train], "validation": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
        for split, part in parts.items():
            out[split].extend(int(i) for i in part)
    return {split: sorted(ids) for split, ids in out.items()}


def load_images(name: str) -> DatasetDict:
    """An image task as train / validation / test: rows {"pixels", "label", "digit"}."""
    if name not in IMAGE_TASKS:
        raise ValueError(f"Unknown image task {name!r}. Available: {', '.join(IMAGE_TASKS)}.")
    images, targets = digits()
    classes = IMAGE_TASKS[name]
    first = classes[0]
    return DatasetDict({split: Dataset.from_dict({
        "pixels": [images[i].tolist() for i in ids],
        "label": [int(targets[i]) - first for i in ids],
        "digit": [int(targets[i]) for i in ids]}) for split, ids in split_indices(targets, classes).items()})
