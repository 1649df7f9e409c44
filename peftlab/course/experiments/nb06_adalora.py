"""Notebook 06's comparison: AdaLoRA against uniform LoRA with the same final rank budget, by the
protocol of experiments/protocol.py (same base model, task, steps, batches; the learning rate picked
on validation from a grid of 3 or 4 values; ten seeds).

The control (`EvenAllocator`): AdaLoRA with everything but its adaptive allocation (the same SVD
form, starting rank, scores and schedule, but every layer keeps the same number of triplets), so
that a win of AdaLoRA over uniform LoRA can be credited to the allocation only if AdaLoRA also beats it.

AdaLoRA calls `update_and_allocate` after every optimizer step (the Method's `on_step`); every run
also reports the ranks it keeps (its `measure`).

    python -m peftlab.course.experiments.nb06_adalora          # writes results/nb06_adalora.json
"""
import torch

from peftlab.tuners import AdaLoraConfig, LoraConfig
from peftlab.tuners.adalora_allocator import RankAllocator

from .protocol import Method, compare, run_and_save

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]   # every linear layer
# A small budget, so that the methods can differ: with 60 steps every one of them reaches 1.000 on
# validation, with 30 all three are within 0.01 of each other, near 0.99; 20 steps leave room.
# Ten seeds: with five, AdaLoRA led uniform LoRA by 0.04 on average with an interval that reached below zero.
SETTINGS = dict(base_name="pico-llama-1m", task_name="sentiment", steps=20, batch_size=16, seeds=tuple(range(10)))
# With ten seeds LoRA r=6 chose 3e-3, the bottom of (3e-3, 1e-2, 3e-2): the grid grew downwards.
LORA_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
# AdaLoRA starts slower (Λ = 0 and P, Q ~ N(0, 0.02): its update grows from a product of three small
# factors); in trial runs at LoRA's rates it was best at the largest, so its grid is one step higher.
ADALORA_LRS = (1e-2, 3e-2, 1e-1)
FINAL_R = 2   # the final budget: 2 ranks per layer on average, 28 layers, 56 ranks in all


def adalora(init_r: int = 6, steps: int = SETTINGS["steps"]) -> AdaLoraConfig:
    """Starts at init_r per layer, keeps FINAL_R per layer on average: warm-up a sixth of the run,
    the last sixth with the pattern fixed, allocation every 2 steps in between. lora_alpha = 2 init_r
    gives the update LoRA's scale alpha / r = 2."""
    return AdaLoraConfig(init_r=init_r, target_r=FINAL_R, lora_alpha=2 * init_r, target_modules=TARGETS,
                         total_step=steps, tinit=steps // 6, tfinal=steps // 6, deltaT=2)


def lora(r: int) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS)


def allocate(model):
    """What train() calls after each optimizer step: AdaLoRA's rank allocation."""
    return model.base_model.update_and_allocate


class EvenAllocator(RankAllocator):
    """AdaLoRA's scores and schedule, but the budget shared evenly: every layer keeps its own best
    budget / layers triplets (the remainder to the first layers), instead of the best over all layers."""

    @torch.no_grad()
    def mask_to_budget(self, layers: dict, budget: int) -> dict[str, list[bool]]:
        scores = self.triplet_scores(layers)
        share, extra = divmod(budget, len(layers))
        rank_pattern = {}
        for i, (module, layer) in enumerate(layers.items()):
            kept = torch.zeros_like(scores[module], dtype=torch.bool)
            kept[torch.argsort(scores[module], descending=True)[:share + (i < extra)]] = True
            layer.lora_E[self.adapter_name].masked_fill_((~kept).view(-1, 1), 0.0)
            rank_pattern[f"{module}.lora_E"] = kept.tolist()
        return rank_pattern


def allocate_evenly(model):
    """The control's on_step: AdaLoRA's allocation with the even allocator in place of its own."""
    model.base_model.rankallocator.__class__ = EvenAllocator
    return model.base_model.update_and_allocate


def kept_ranks(model) -> int:
    """Ranks the trained model keeps, summed over its layers (AdaLoRA: its rank_pattern; LoRA: r each)."""
    config = model.peft_config["default"]
    if isinstance(config, AdaLoraConfig):
        return sum(sum(keep) for keep in config.rank_pattern.values())
    return sum(layer.r["default"] for layer in model.base_model.adapter_layers())


def report_ranks(model) -> dict:
    return {"kept_ranks": kept_ranks(model)}


METHODS = {
    f"LoRA r={FINAL_R} (uniform)": Method(lambda: lora(FINAL_R), LORA_LRS, measure=report_ranks),
    f"AdaLoRA 6 -> {FINAL_R}": Method(adalora, ADALORA_LRS, on_step=allocate, measure=report_ranks),
    "LoRA r=6 (the starting budget)": Method(lambda: lora(6), LORA_LRS, measure=report_ranks),
    f"AdaLoRA, {FINAL_R} in every layer (control)": Method(adalora, ADALORA_LRS, on_step=allocate_evenly,
                                                        measure=report_ranks),
}


def run() -> dict:
    results = compare(METHODS, **SETTINGS)
    results["settings"].update(targets=TARGETS, final_r=FINAL_R)
    return results


def main(threads: int = 1) -> None:
    run_and_save("nb06_adalora", run, threads)   # one: these tiny runs gain little from two, and the machine is shared


if __name__ == "__main__":
    main()
