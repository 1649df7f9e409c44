"""The pretraining corpus: short stories, fact paragraphs and plain statements.

Three kinds of document, mixed at random:
- stories (people, places, objects, films and meals that turn out good or bad),
- fact paragraphs (country -> capital and continent, in many natural phrasings),
- statements that use the words the tasks need ("review", "question", ":" ...) in ordinary
  sentences, so that every task word has a trained embedding but no task *format* is seen.

Nothing here writes "Sentiment :", "question : capital of X ? answer :" or "fields :": those
formats belong to the tasks (see tasks.py) and a test checks they never occur in the corpus.
"""
import random

from .vocab import (
    ANIMALS,
    ASPECTS,
    COLORS,
    FEEL_BAD,
    FEEL_GOOD,
    ITEMS,
    NAMES,
    NEGATIVE,
    NUMBERS,
    PLACES,
    POSITIVE,
    PRONOUN,
    WORKS,
)
from .world import COUNTRIES

# Fact templates: {c} country, {k} capital, {n} continent. The probing task's template
# ("question : capital of {c} ? answer :") is deliberately absent.
CAPITAL_TEMPLATES = [
    "The capital of {c} is {k} .",
    "{k} is the capital of {c} .",
    "{c} has its capital in {k} .",
    "The capital city of {c} is {k} .",
    "People in {c} call {k} their capital .",
    "{k} , the capital of {c} , is a busy city .",
    "If you travel to {c} , you may visit {k} , its capital .",
    "The government of {c} meets in {k} .",
    "Many people in {c} live in {k} , the capital .",
    "{k} is a city in {c} , and it is the capital .",
]
CONTINENT_TEMPLATES = [
    "{c} is a country in {n} .",
    "{c} is in {n} .",
    "You can find {c} in {n} .",
]


def fact_paragraph(rng: random.Random) -> str:
    sentences = []
    for country, capital, continent in rng.sample(COUNTRIES, rng.randint(1, 3)):
        sentences.append(rng.choice(CAPITAL_TEMPLATES).format(c=country, k=capital))
        if rng.random() < 0.4:
            sentences.append(rng.choice(CONTINENT_TEMPLATES).format(c=country, n=continent))
    return " ".join(sentences)


def _opinion(rng: random.Random, good: bool) -> str:
    """One clause saying a part of a work was good or bad, sometimes by negation."""
    aspect = rng.choice(ASPECTS)
    if rng.random() < 0.2:  # "not dull" is good, "not great" is bad
        return f"the {aspect} was not {rng.choice(NEGATIVE if good else POSITIVE)}"
    return f"the {aspect} was {rng.choice(POSITIVE if good else NEGATIVE)}"


def review_story(rng: random.Random) -> str:
    name, work = rng.choice(NAMES), rng.choice(WORKS)
    good = rng.random() < 0.5
    feel = rng.choice(FEEL_GOOD if good else FEEL_BAD)
    opening = rng.choice([f"{name} tried a new {work} .", f"{name} went to see a {work} .",
                          f"One day {name} found an old {work} ."])
    first = _opinion(rng, good)
    middle = f"{first[0].upper()}{first[1:]} ."
    if rng.random() < 0.5:
        middle = f"{middle[:-2]} and {_opinion(rng, good)} ."
    closing = rng.choice([f"{PRONOUN[name]} was {feel} .",
                          f"After the {work} , {name} felt {feel} .",
                          f"{name} told a friend about it and was {feel} ."])
    return " ".join([opening, middle, closing])


def market_story(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    number, color, item = rng.choice(NUMBERS), rng.choice(COLORS), rng.choice(ITEMS)
    place = rng.choice(PLACES)
    sentences = [rng.choice([f"{name} went to the {place} .", f"In the morning {name} walked to the {place} ."]),
                 rng.choice([f"{name} bought {number} {color} {item} .",
                             f"There {name} found {number} {color} {item} .",
                             f"{PRONOUN[name]} got {number} {color} {item} at the {place} ."])]
    if rng.random() < 0.5:
        friend = rng.choice([n for n in NAMES if n != name])
        sentences.append(f"{PRONOUN[name]} gave one to {friend} , and {friend} was {rng.choice(FEEL_GOOD)} .")
    if rng.random() < 0.3:
        sentences.append(f"Where did {name} put the {item} ? In a {color} bag .")
    return " ".join(sentences)


def animal_story(rng: random.Random) -> str:
    name, animal, place = rng.choice(NAMES), rng.choice(ANIMALS), rng.choice(PLACES)
    mood = rng.choice(FEEL_GOOD + FEEL_BAD)
    return " ".join([f"{name} had a {rng.choice(COLORS)} {animal} .",
                     f"Every day they went to the {place} together .",
                     rng.choice([f"One day the {animal} ran away , and {name} was {mood} .",
                                 f"The {animal} liked the {place} , and {name} was {mood} ."])])


STATEMENTS = [
    "{name} wrote a review of the {work} .",
    "A review tells other people what you think of a {work} .",
    "{name} read a long review before choosing a {work} .",
    "{name} asked a question , and {friend} gave an answer .",
    "The teacher said : every question has an answer .",
    "{name} did not know the answer to the question .",
    "{number} is a positive number .",
    "Zero minus {number} is a negative number .",
    "A positive number is bigger than zero , and a negative number is smaller .",
    "Sentiment is the feeling a person has about something .",
    "The sign at the {place} said : please be quiet .",
    "{name} kept a record of the {item} in a small book .",
    "The fields near the {place} were green .",
    "{name} wrote a sentence about the {place} .",
    "Each sentence in the book was short .",
    "{name} has {number} {item} , and {friend} has {number2} .",
    "{name} wanted to see a {work} , but the {place} was closed .",
    "Review the question before you write the answer , said the teacher .",
    "{name} liked this {work} more than the last one .",
    "Have you seen the {item} ? {name} has seen them at the {place} .",
    "At the {place} , {name} picked up {number} {item} and put them in a box .",
]


def statement(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    return rng.choice(STATEMENTS).format(
        name=name, friend=rng.choice([n for n in NAMES if n != name]), work=rng.choice(WORKS),
        number=rng.choice(NUMBERS), number2=rng.choice(NUMBERS), place=rng.choice(PLACES),
        item=rng.choice(ITEMS))


KINDS = [(fact_paragraph, 0.30), (review_story, 0.25), (market_story, 0.20),
         (animal_story, 0.10), (statement, 0.15)]


def document(rng: random.Random) -> str:
    make = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
    return make(rng)


def generate_corpus(n_train: int, n_heldout: int, seed: int = 0) -> dict[str, list[dict]]:
    """Train and held-out documents drawn from the same distribution (different seeds)."""
    train_rng, heldout_rng = random.Random(seed), random.Random(seed + 1)
    return {"train": [{"text": document(train_rng)} for _ in range(n_train)],
            "heldout": [{"text": document(heldout_rng)} for _ in range(n_heldout)]}
