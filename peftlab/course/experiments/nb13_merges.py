"""Notebook 13's merges over seeds: what each way of combining two LoRA adapters keeps of both tasks.

Per seed, as notebook 13 trains them: one frozen pico-llama-1m, a sentiment adapter (80 steps) and a
capitals adapter (40 steps), LoRA r=4 on q and v, lr 3e-3, batches of 16. Then every combination
type of `add_weighted_adapter` sums the two with one weight lambda for both (task arithmetic's
scaling: Ilharco et al. 2023 choose it on held-out data), lambda picked from `LAMBDAS` on the
validation splits by the mean of the two task scores (200 sentiment reviews, the 16 validation
countries), then scored on the test splits (200 reviews, 40 countries) and on the base's fact recall.
DARE's random drop is seeded with the run's seed. Seeds 0-4.

    python -m peftlab.course.experiments.nb13_merges          # writes results/nb13_merges.json
"""
import statistics

import torch

from peftlab import LoraConfig, get_peft_model
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import LABEL_WORDS, load_task
from peftlab.workbook.evaluate import exact_match, fact_recall, fact_recall_by_rank, label_accuracy
from peftlab.workbook.training import train
from peftlab.workbook.zoo import load_base_model

from .protocol import run_and_save

SEEDS = (0, 1, 2, 3, 4)
STEPS = {"sentiment": 80, "capitals": 40}      # notebook 13's budgets
LR, BATCH_SIZE, N_SENTIMENT = 3e-3, 16, 200
LAMBDAS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
KINDS = ("cat", "svd", "linear", "ties_svd", "dare_linear_svd", "dare_ties_svd", "ties", "dare_linear")
DENSITY = 0.5


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def two_adapters(seed: int):
    """Notebook 13's two task adapters on one frozen base, trained one after the other."""
    base, tokenizer = load_base_model()
    base.requires_grad_(False)
    torch.manual_seed(seed)          # both adapters' random A (the notebook seeds 0 here too)
    model = get_peft_model(base, lora_config(), adapter_name="sentiment")
    model.add_adapter("capitals", lora_config())
    for name, steps in STEPS.items():
        model.set_adapter(name)
        train(model, load_task(name)["train"], PromptTargetCollator(tokenizer), steps=steps, lr=LR,
              batch_size=BATCH_SIZE, warmup=0.1, seed=seed, progress=False)
    return model, tokenizer


def task_scores(model, tokenizer, split: str) -> dict[str, float]:
    sentiment = list(load_task("sentiment")[split])[:N_SENTIMENT]
    return {"sentiment": round(label_accuracy(model, tokenizer, sentiment, LABEL_WORDS), 4),
            "capitals": round(exact_match(model, tokenizer, list(load_task("capitals")[split])), 4)}


def scored(model, tokenizer) -> dict[str, float]:
    """Test scores of both tasks and the base's facts, as the notebook's `scores` reads them."""
    return {**task_scores(model, tokenizer, "test"), "fact recall": round(fact_recall(model, tokenizer), 4),
            "ranked recall": round(fact_recall_by_rank(model, tokenizer), 4)}


def merge(model, kind: str, weight: float, seed: int) -> str:
    name = f"{kind} at {weight:g}".replace(".", "_")   # adapter names may not hold a dot
    torch.manual_seed(seed)          # DARE's drop is random
    options = {"density": DENSITY} if kind not in ("cat", "svd", "linear") else {}
    model.add_weighted_adapter(["sentiment", "capitals"], [weight, weight], name, combination_type=kind, **options)
    return name


def one_seed(seed: int) -> dict:
    model, tokenizer = two_adapters(seed)
    runs = {}
    for single in STEPS:
        model.set_adapter(single)
        runs[single] = scored(model, tokenizer)
    for kind in KINDS:
        validation = {}
        for weight in LAMBDAS:
            name = merge(model, kind, weight, seed)
            model.set_adapter(name)
            validation[weight] = task_scores(model, tokenizer, "validation")
            model.delete_adapter(name)
        best = max(LAMBDAS, key=lambda w: statistics.mean(validation[w].values()))
        model.set_adapter(merge(model, kind, best, seed))
        runs[kind] = {**scored(model, tokenizer), "lambda": best,
                      "validation_by_lambda": {str(w): validation[w] for w in LAMBDAS}}
        print(f"seed {seed}, {kind:>15}: lambda {best:g}, " +
              ", ".join(f"{k} {v:.3f}" for k, v in runs[kind].items() if isinstance(v, float) and k != "lambda"),
              flush=True)
    return runs


def run() -> dict:
    per_seed = {str(seed): one_seed(seed) for seed in SEEDS}
    return {"settings": {"seeds": list(SEEDS), "steps": STEPS, "lr": LR, "batch_size": BATCH_SIZE,
                         "lambdas": list(LAMBDAS), "density": DENSITY, "n_sentiment": N_SENTIMENT},
            "seeds": per_seed}


def main() -> None:
    run_and_save("nb13_merges", run, threads=1)


if __name__ == "__main__":
    main()
