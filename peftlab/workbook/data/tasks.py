"""The three bundled downstream tasks. Each row has a `prompt` and a `target`.

- sentiment: "Review : <review> Sentiment :" -> " positive" / " negative". Reviews mix
  negation ("not dull") and contrast ("... but ..."): after "but" the second clause decides.
- capitals: "question : capital of <country> ? answer :" -> capital (LAMA / P-tuning style).
  Train, validation and test hold *different* countries, so a learned prompt must pull facts
  out of the model rather than memorise them.
- records: "sentence : <a sentence about a purchase> fields :" -> "<name> , <count> , <item>",
  scored by exact match; the sentence comes in several word orders.
"""
import random

from .corpus import _opinion
from .vocab import COLORS, ITEMS, NAMES, NUMBERS, PLACES, WORKS
from .world import COUNTRIES

LABEL_WORDS = ("negative", "positive")  # label 0, label 1


def sentiment_example(rng: random.Random) -> dict:
    label = rng.random() < 0.5
    kind = rng.choices(["one", "and", "but"], weights=[0.3, 0.3, 0.4])[0]
    if kind == "one":
        clauses = _opinion(rng, label)
    elif kind == "and":
        clauses = f"{_opinion(rng, label)} and {_opinion(rng, label)}"
    else:  # the clause after "but" decides
        clauses = f"{_opinion(rng, not label)} but {_opinion(rng, label)}"
    work = rng.choice(WORKS)
    review = rng.choice([f"this {work} : {clauses} .", f"{clauses} .", f"the {work} was seen . {clauses} ."])
    return {"prompt": f"Review : {review} Sentiment :", "target": f" {LABEL_WORDS[label]}",
            "label": int(label)}


def sentiment_task(seed: int, sizes=(2000, 500, 1000)) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    return {split: [sentiment_example(rng) for _ in range(n)]
            for split, n in zip(("train", "validation", "test"), sizes)}


CAPITAL_PROBE = "question : capital of {c} ? answer :"


def capitals_task(seed: int, sizes=(50, 16, 40)) -> dict[str, list[dict]]:
    countries = list(COUNTRIES)
    random.Random(seed).shuffle(countries)
    rows = [{"prompt": CAPITAL_PROBE.format(c=c), "target": f" {k}", "country": c, "capital": k}
            for c, k, _ in countries]
    n_train, n_val, _ = sizes
    return {"train": rows[:n_train], "validation": rows[n_train:n_train + n_val],
            "test": rows[n_train + n_val:]}


RECORD_TEMPLATES = [
    "{name} bought {n} {color} {item} at the {place} .",
    "At the {place} , {name} bought {n} {color} {item} .",
    "There were {n} {color} {item} at the {place} , and {name} bought them .",
    "{name} went to the {place} and got {n} {color} {item} .",
]


def record_example(rng: random.Random) -> dict:
    name, n, item = rng.choice(NAMES), rng.choice(NUMBERS), rng.choice(ITEMS)
    sentence = rng.choice(RECORD_TEMPLATES).format(name=name, n=n, item=item,
                                                   color=rng.choice(COLORS), place=rng.choice(PLACES))
    return {"prompt": f"sentence : {sentence} fields :", "target": f" {name} , {n} , {item}"}


def records_task(seed: int, sizes=(2000, 300, 500)) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    return {split: [record_example(rng) for _ in range(n)]
            for split, n in zip(("train", "validation", "test"), sizes)}
