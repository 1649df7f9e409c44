"""Checkers for 11_qlora."""

from peftlab.workbook.memory import LLAMA_SHAPES, finetuning_memory, llama_parameters

from .checking import Verdict, attempted, judge_prediction, report

NF4_DQ_BITS = 4 + 8 / 64 + 32 / (64 * 256)


def check_7b_nf4_gigabytes(answer) -> Verdict:
    """🌱 Gigabytes (1e9 bytes) of LLaMA-7B's weights in NF4 with double quantization."""
    if not attempted(answer):
        return report("7B in NF4", None)
    n = llama_parameters(*LLAMA_SHAPES["7B"])
    right = n * NF4_DQ_BITS / 8 / 1e9
    if abs(answer - right) < 0.05:
        return report("7B in NF4", True, f"{right:.2f} GB, against {2 * n / 1e9:.1f} GB in 16 bits: it fits a "
                      "laptop GPU, and a 65B model fits one 48 GB GPU with room for LoRA.")
    if abs(answer - n * 4 / 8 / 1e9) < 0.05:
        return report("7B in NF4", False, "4 bits for the codes, and the scaling constants on top: 4.127 bits per weight.")
    if abs(answer - n * 4.5 / 8 / 1e9) < 0.05:
        return report("7B in NF4", False, "that is without double quantization (4.5 bits): the constants take 8 bits.")
    if abs(answer - right * 1e9 / 2**30) < 0.05:
        return report("7B in NF4", False, "that is in GiB (2^30 bytes); the question asks for GB (10^9).")
    return report("7B in NF4", False, "parameters x 4.127 bits / 8 bits per byte / 1e9.")


GiB = 2**30
FIT = {"size": "65B", "method": "QLoRA", "r": 64, "batch": 1, "seq": 2048}   # the question's settings
GPU_GIB = 48


def check_65b_at_2048(prediction, settings, measured_gib) -> Verdict:
    """🌿 Predict, then measure: does the 65B QLoRA fine-tuning still fit one 48 GB GPU with sequences of
    2,048 tokens (four times the notebook's 512)? `prediction`: "fits" or "does not fit"; `settings`: the
    keyword arguments given to finetuning_memory; `measured_gib`: its total in GiB, computed again here."""
    title = "65B at 2,048 tokens"
    if not (attempted(prediction) and attempted(measured_gib)):
        return report(title, None)
    if prediction not in ("fits", "does not fit"):
        return report(title, False, "predict 'fits' or 'does not fit'.")
    if not isinstance(settings, dict) or any(settings.get(k) != v for k, v in FIT.items()):
        return report(title, False, f"measure with the question's settings: finetuning_memory(**{FIT}) "
                      f"(gradient checkpointing on, its default); pass that dict as `settings`.")
    truth = finetuning_memory(**settings)
    total = truth["total"] / GiB
    if not isinstance(measured_gib, (int, float)) or abs(measured_gib - total) > 0.01:
        return report(title, False, f"finetuning_memory(**settings)['total'] is {total:.2f} GiB; pass it in GiB "
                      "(divide the bytes by 2**30).")
    found = "fits" if total <= GPU_GIB else "does not fit"
    lesson = (f"Four times the tokens is four times the checkpointed activations ({truth['activations'] / GiB:.1f} GiB "
              f"instead of 0.8), and the total comes to {total:.1f} GiB: {GPU_GIB - total:.1f} GiB under 48 on paper. "
              "That margin must hold the CUDA context (several hundred MiB), the dequantized weight of the layer being "
              "computed and the recomputed block's activations during the backward pass: on paper it fits, in "
              "practice it is too thin to count on, which is why QLoRA pages optimizer state and why people shorten "
              "sequences or checkpoint more finely before they buy a bigger GPU.")
    return judge_prediction(title, prediction, found, f"{total:.1f} GiB for 65B QLoRA, r=64, one sequence of 2,048 "
                            "tokens", lesson)


SEED_CHECK = 5   # a seed outside the stored comparison's 0-4
CLOSE = 0.05     # "as good": within 0.05 accuracy


NEW_SEED_ROWS = {"LoRA": "LoRA, float base", "QLoRA": "QLoRA, NF4 + double quantization"}


def new_seed_scores() -> dict[str, float]:
    """Test accuracy of both rows of the stored comparison on seed SEED_CHECK, each at its stored rate."""
    from peftlab.course.experiments import nb11_qlora
    from peftlab.course.experiments.protocol import load_results, run_stored_rows
    settings = nb11_qlora.SETTINGS
    return run_stored_rows("nb11_qlora", nb11_qlora.METHODS, NEW_SEED_ROWS, SEED_CHECK,
                           n_test=load_results("nb11_qlora")["settings"]["n_test"],
                           **{k: settings[k] for k in ("base_name", "task_name", "steps", "batch_size")})


def check_qlora_on_a_new_seed(prediction, measured) -> Verdict:
    """🌳 Predict, then measure: on seed SEED_CHECK, at the stored rates, does QLoRA (NF4 + double
    quantization) land within CLOSE of LoRA on the float base? `prediction`: True or False; `measured`:
    {"LoRA": test accuracy, "QLoRA": test accuracy}, both run again here (about 3 s)."""
    from peftlab.course.experiments.protocol import load_results
    from peftlab.workbook.stats import compare
    title = "QLoRA against LoRA on a new seed"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if not isinstance(prediction, bool):
        return report(title, False, f"predict True (within {CLOSE} of each other) or False.")
    if not isinstance(measured, dict) or set(measured) != set(NEW_SEED_ROWS):
        return report(title, False, 'measure both: {"LoRA": run["test"], "QLoRA": run["test"]}.')
    stored, truth = load_results("nb11_qlora"), new_seed_scores()
    if any(measured[k] != truth[k] for k in truth):
        return report(title, False, f"run again here, seed {SEED_CHECK} at the stored rates gives LoRA "
                      f"{truth['LoRA']:.3f} and QLoRA {truth['QLoRA']:.3f}: use run_method with seed={SEED_CHECK}, "
                      "each method's stored lr and the stored settings, and pass run['test'].")
    close = abs(truth["LoRA"] - truth["QLoRA"]) <= CLOSE + 1e-9
    over_seeds = compare(stored["rows"][NEW_SEED_ROWS["QLoRA"]]["test"], stored["rows"][NEW_SEED_ROWS["LoRA"]]["test"],
                         names=("QLoRA", "LoRA"))
    lesson = (f"Over the stored seeds 0-4: {over_seeds.verdict} (QLoRA - LoRA {over_seeds.difference:+.3f}, 95% "
              f"interval {over_seeds.low:+.3f} to {over_seeds.high:+.3f}). One more seed is one more draw from a "
              "spread of about 0.1 between seeds, so a single seed could land either way: the 4-bit base is "
              "judged by the interval over seeds, not by one run.")
    return judge_prediction(title, "within 0.05" if prediction else "apart", "within 0.05" if close else "apart",
                            f"seed {SEED_CHECK}: LoRA {truth['LoRA']:.3f}, QLoRA {truth['QLoRA']:.3f}", lesson)
