"""Checkers for 15_peft_for_images. The predictions are judged on the stored 5-seed results
(results/nb15_images.json), so a checker's verdict does not depend on one lucky run."""
import statistics

from peftlab.course.experiments.protocol import load_results

from .checking import Verdict, attempted, report

NAMES = {"probe": "linear probe", "linear probe": "linear probe", "lora": "LoRA", "full": "full fine-tuning",
         "full fine-tuning": "full fine-tuning"}
KEEPERS = {"probe", "lora on", "lora off", "full"}
# The patch embedding: Conv2d(1, 64, kernel_size=2); LoRA r=4 reads it as a (64, 1*2*2) matrix.
PATCH_IN, PATCH_OUT, KERNEL, R = 1, 64, 2, 4


def _row(name: str, steps: int = 100) -> dict:
    return load_results("nb15_images")["rows"][f"{name}, {steps} steps"]


def measured_ranking(steps: int = 100) -> list[str]:
    """The methods by mean test accuracy on the new digits, best first (stored results)."""
    methods = ("linear probe", "LoRA", "full fine-tuning")
    return sorted(methods, key=lambda m: -_row(m, steps)["test_summary"]["mean"])


def check_ranking(ranking) -> Verdict:
    """🌱 the three methods ordered by accuracy on the new digits after 100 steps."""
    title = "ranking the methods"
    if not attempted(ranking):
        return report(title, None)
    try:
        names = [NAMES[str(n).strip().lower()] for n in ranking]
    except KeyError as error:
        return report(title, False, f"unknown name {error}; use 'probe', 'lora' and 'full'.")
    if sorted(names) != sorted(NAMES[n] for n in ("probe", "lora", "full")):
        return report(title, False, "name each of 'probe', 'lora' and 'full' once, best first.")
    right = measured_ranking()
    means = ", ".join(f"{m} {_row(m)['test_summary']['mean']:.3f}" for m in right)
    if names == right:
        return report(title, True, f"{means} (5 seeds). The new digits need new features, not only a new "
                      "readout of the old ones: the more of the backbone trains, the better, after 100 steps.")
    if names[-1] != right[-1]:
        return report(title, False, "which method cannot change the features at all? Features learned for 0-4 "
                      "are not enough to tell a 7 from a 9.")
    return report(title, False, "close: compare how much of the backbone each method can change in 100 steps.")


def check_exact_keepers(exact) -> Verdict:
    """🌿 which readings keep the pretrained model's accuracy on the old digits exactly."""
    title = "what keeps the old task exactly"
    if not attempted(exact):
        return report(title, None)
    chosen = {str(e).strip().lower() for e in ([exact] if isinstance(exact, str) else exact)}
    if not chosen <= KEEPERS:
        return report(title, False, f"choose among {sorted(KEEPERS)}.")
    right = {"probe", "lora off"}
    if chosen == right:
        return report(title, True, "the probe never touches the backbone, and LoRA's adapter switched off leaves "
                      "exactly the frozen weights: both are the pretrained model, bit for bit, under the old head.")
    if "lora on" in chosen:
        return report(title, False, "with the adapter on, q and v are W + s B A: the features change, and the old "
                      "head reads different features.")
    if "full" in chosen:
        return report(title, False, "full fine-tuning overwrote the pretrained weights; nothing switches them back.")
    missing = right - chosen
    return report(title, False, f"one more keeps it exactly: think about {sorted(missing)[0]!r}.")


def patch_conv_effect() -> str:
    """'helps' or 'hurts' when LoRA with the patch convolution beats (loses to) LoRA without it on every
    one of the 5 seeds (paired by seed), else 'no clear change' (stored results, 100 steps)."""
    with_conv, without = _row("LoRA + patch conv")["test"], _row("LoRA")["test"]
    if all(a > b for a, b in zip(with_conv, without)):
        return "helps"
    if all(a < b for a, b in zip(with_conv, without)):
        return "hurts"
    return "no clear change"


def check_patch_conv(extra_parameters, effect) -> Verdict:
    """🌳 LoRA on the patch embedding: parameters added, and its effect after 100 steps."""
    title = "LoRA on the patch convolution"
    if not (attempted(extra_parameters) and attempted(effect)):
        return report(title, None)
    right = R * (PATCH_IN * KERNEL * KERNEL + PATCH_OUT)
    if extra_parameters != right:
        if extra_parameters == R * (PATCH_IN + PATCH_OUT):
            return report(title, False, "A is a convolution with the base's 2 x 2 kernel: it reads in*k*k = 4 "
                          "numbers per output channel, not 1.")
        if extra_parameters == PATCH_OUT * PATCH_IN * KERNEL * KERNEL:
            return report(title, False, "that is the kernel itself; LoRA adds A (r, in*k*k) and B (out, r).")
        return report(title, False, "A: r x (in * k * k), B: out x r, with in = 1, k = 2, out = 64, r = 4.")
    measured = patch_conv_effect()
    answer = str(effect).strip().lower()
    with_conv, without = _row("LoRA + patch conv"), _row("LoRA")
    numbers = (f"with it {statistics.mean(with_conv['test']):.3f} (lr {with_conv['lr']:g}), without "
               f"{statistics.mean(without['test']):.3f} (lr {without['lr']:g}), 5 seeds")
    if answer not in ("helps", "hurts", "no clear change"):
        return report(title, False, "effect is one of 'helps', 'hurts', 'no clear change'.")
    if answer != measured:
        return report(title, False, f"{right} parameters is right; the effect: {numbers}. Look at it seed by "
                      "seed in the stored results before you decide.")
    why = {"no clear change": "The new digits are written with the same pen strokes as the old ones, so how "
                              "2 x 2 patches become vectors plausibly needs little change.",
           "helps": "Even the way 2 x 2 patches become vectors gains from adapting to the new digits.",
           "hurts": "Moving the patch embedding moves the input of every layer: it makes training harder."}
    return report(title, True, f"{right} parameters; {measured}: {numbers}. {why[measured]}")
