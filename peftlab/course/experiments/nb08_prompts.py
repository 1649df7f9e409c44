"""Notebook 08's studies of prompt tuning, over seeds, by one protocol (experiments/protocol.py).

The sentiment task, 100 steps of 16 reviews, each condition's learning rate picked from a 3-value grid
on 200 validation reviews, 3 seeds, label accuracy on the notebook's 400 test reviews.

1. `INITS`: where a 32-token prompt starts on pico-llama-1m: random (at the embeddings' scale), sampled
   vocabulary, peft's TEXT init from the class labels ("negative positive": <bos>, negative, positive
   repeated), and Lester et al.'s class-label start (one token per label word, the rest sampled vocabulary;
   their §2.1 and §3.2). Then the same four at 150 steps, each at its 100-step rate: is a start slower,
   or stuck?
2. `LENGTHS`: P = 1 and 8 on pico-llama-1m, random start (P = 32 is the random row of study 1: the same
   runs, so they are not repeated).
3. `SCALE`: prompt tuning (P = 8) and LoRA (r = 4 on q, v) on pico-llama-1m and pico-llama-4m. A virtual
   token is as wide as the model (128 and 256), so the 4M model's 8 tokens train twice the numbers; the
   parameter-matched rows are P = 16 on the 1M model (2,048, as the 4M model's P = 8) and P = 4 on the
   4M model (1,024, as the 1M model's P = 8).

    python -m peftlab.course.experiments.nb08_prompts          # writes results/nb08_prompts.json

111 training runs on one thread: 45 minutes on the 2-core development machine while other work shared it
(18 minutes of CPU time).
"""
import functools

import torch
from transformers import AutoTokenizer

from peftlab.tuners import LoraConfig, PromptTuningConfig
from peftlab.workbook.data import LABEL_WORDS
from peftlab.workbook.zoo import model_path

from .protocol import Method, compare, run_and_save

SMALL, LARGE = "pico-llama-1m", "pico-llama-4m"
SETTINGS = dict(task_name="sentiment", steps=100, batch_size=16, seeds=(0, 1, 2), n_validation=200, n_test=400)
LONGER_STEPS = 150
# Prompts train at rates 60x LoRA's (notebook 08): the grid brackets 0.3, the notebook's rate.
PROMPT_LRS, LORA_LRS = (0.1, 0.3, 1.0), (1e-3, 3e-3, 1e-2)
LABEL_TEXT = "negative positive"   # the class labels as peft's TEXT init reads them


@functools.cache
def tokenizer():
    return AutoTokenizer.from_pretrained(model_path(SMALL))   # both bundled Llama models share it


def class_label_start(table: torch.Tensor, label_ids, P: int, generator=None) -> torch.Tensor:
    """Lester et al.'s class-label start: virtual token i < len(label_ids) starts as the embedding of
    label word i, the others as embeddings of tokens drawn from the vocabulary. table: (V, d) -> (P, d)."""
    labels = table[torch.as_tensor(list(label_ids))][:P]                                  # (L, d)
    drawn = torch.randint(0, table.shape[0], (P - len(labels),), generator=generator)    # sampled vocabulary
    return torch.cat([labels, table[drawn]])                                              # (P, d)


def start_from_class_labels(model):
    """A Method.on_step that sets Lester et al.'s start: run_method builds the step hooks on the new
    model just before training, so this runs once, after the random init and before the first step
    (tests/test_nb08_prompts_experiment.py checks that); it does nothing per step."""
    prompt = model.prompt_encoder["default"].embedding.weight                            # (P, d)
    label_ids = tokenizer().convert_tokens_to_ids(list(LABEL_WORDS))
    with torch.no_grad():
        prompt.copy_(class_label_start(model.get_input_embeddings().weight.detach(), label_ids, prompt.shape[0]))
    return lambda step: None


def prompt(P: int, init: str = "RANDOM", **options):
    return lambda: PromptTuningConfig(num_virtual_tokens=P, prompt_tuning_init=init, **options)


def lora():
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


INITS = {
    "random": Method(prompt(32), PROMPT_LRS),
    "sampled vocabulary": Method(prompt(32, "SAMPLE_VOCAB"), PROMPT_LRS),
    "class labels (peft TEXT)": Method(prompt(32, "TEXT", prompt_tuning_init_text=LABEL_TEXT,
                                              tokenizer_name_or_path=str(model_path(SMALL))), PROMPT_LRS),
    "class labels (Lester et al.)": Method(prompt(32), PROMPT_LRS, on_step=start_from_class_labels),
}
LENGTHS = {f"P={n}": Method(prompt(n), PROMPT_LRS) for n in (1, 8)}
SCALE = {
    SMALL: {"prompt P=8": LENGTHS["P=8"], "prompt P=16": Method(prompt(16), PROMPT_LRS),
            "LoRA r=4": Method(lora, LORA_LRS)},
    LARGE: {"prompt P=8": Method(prompt(8), PROMPT_LRS), "prompt P=4": Method(prompt(4), PROMPT_LRS),
            "LoRA r=4": Method(lora, LORA_LRS)},
}


def at_chosen_rates(methods: dict[str, Method], rows: dict) -> dict[str, Method]:
    """The same methods, each with only the learning rate it was given in `rows`."""
    return {name: Method(m.config, (rows[name]["lr"],), m.prepare_base, m.on_step, m.measure)
            for name, m in methods.items()}


def run() -> dict:
    init = compare(INITS, base_name=SMALL, **SETTINGS)
    longer = compare(at_chosen_rates(INITS, init["rows"]), base_name=SMALL, **{**SETTINGS, "steps": LONGER_STEPS})
    for row in longer["rows"].values():
        row["rate_from"] = "init"   # each start at the rate its 100-step grid chose, not a grid of its own
    length = compare(LENGTHS, base_name=SMALL, **SETTINGS)["rows"]
    # Rows already run above with the same method, settings and seeds are taken, not repeated (runs are deterministic).
    done = {SMALL: {"prompt P=8": length["P=8"]}}
    scale = {base: {**done.get(base, {}), **compare({k: m for k, m in methods.items() if k not in done.get(base, {})},
                                                    base_name=base, **SETTINGS)["rows"]}
             for base, methods in SCALE.items()}
    results = {"settings": {**init["settings"], "base_model": SMALL, "longer_steps": LONGER_STEPS},
               "init": init["rows"], "init_longer": longer["rows"],
               "length": {"P=1": length["P=1"], "P=8": length["P=8"], "P=32": init["rows"]["random"]},
               "scale": {base: {name: rows[name] for name in SCALE[base]} for base, rows in scale.items()}}
    return results


def main() -> None:
    run_and_save("nb08_prompts", run, threads=1)


if __name__ == "__main__":
    main()
