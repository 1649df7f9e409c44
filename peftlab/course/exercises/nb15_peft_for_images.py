"""Checkers for 15_peft_for_images. The predictions are judged on the stored 5-seed results
(results/nb15_images.json), so a checker's verdict does not depend on one lucky run."""

from peftlab.course.experiments.protocol import load_results

from .checking import Verdict, attempted, judge_prediction, report

NAMES = {"probe": "linear probe", "linear probe": "linear probe", "lora": "LoRA", "full": "full fine-tuning",
         "full fine-tuning": "full fine-tuning"}
KEEPERS = {"probe", "lora on", "lora off", "full"}
# The patch embedding: Conv2d(1, 64, kernel_size=2); LoRA r=4 reads it as a (64, 1*2*2) matrix.
PATCH_IN, PATCH_OUT, KERNEL, R = 1, 64, 2, 4


def _row(name: str, steps: int = 100) -> dict:
    return load_results("nb15_images")["rows"][f"{name}, {steps} steps"]


def measured_groups(steps: int = 100) -> list[list[str]]:
    """The methods in groups the seeds can separate, best first (stats.rank over the stored 5 seeds)."""
    from peftlab.workbook.stats import rank
    return rank({m: _row(m, steps)["test"] for m in ("linear probe", "LoRA", "full fine-tuning")})


def measured_ranking(steps: int = 100) -> list[str]:
    """One order consistent with measured_groups: the groups in turn, by mean inside each."""
    return [name for group in measured_groups(steps) for name in group]


def check_ranking(ranking) -> Verdict:
    """🌱 the three methods ordered by accuracy on the new digits after 100 steps: any order that keeps the
    groups the seeds separate (methods inside one group may come in either order)."""
    from peftlab.workbook.stats import format_rank
    title = "ranking the methods"
    if not attempted(ranking):
        return report(title, None)
    try:
        names = [NAMES[str(n).strip().lower()] for n in ranking]
    except KeyError as error:
        return report(title, False, f"unknown name {error}; use 'probe', 'lora' and 'full'.")
    if sorted(names) != sorted(NAMES[n] for n in ("probe", "lora", "full")):
        return report(title, False, "name each of 'probe', 'lora' and 'full' once, best first.")
    groups = measured_groups()
    group_of = {name: k for k, group in enumerate(groups) for name in group}
    means = ", ".join(f"{m} {_row(m)['test_summary']['mean']:.3f}" for m in measured_ranking())
    if [group_of[n] for n in names] == sorted(group_of[n] for n in names):
        return report(title, True, f"{means} (5 seeds; what the seeds separate: {format_rank(groups)}). The new "
                      "digits need new features, not only a new readout of the old ones: the more of the backbone "
                      "trains, the better, after 100 steps.")
    if group_of[names[-1]] != len(groups) - 1:
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
    """'helps' or 'hurts' when compare, paired by seed over the stored 5 seeds, puts LoRA with the patch
    convolution detectably ahead of (behind) LoRA without it at 100 steps, else 'no clear change'."""
    from peftlab.workbook.stats import compare
    verdict = compare(_row("LoRA + patch conv")["test"], _row("LoRA")["test"], names=("with", "without"))
    return "helps" if verdict.low > 0 else "hurts" if verdict.high < 0 else "no clear change"


def patch_conv_runs(seed: int = 0) -> dict[str, dict]:
    """The exercise's measurement: LoRA without and with the patch convolution, 100 steps, each at its
    stored learning rate, on `seed` (about 10 s)."""
    from peftlab.course.experiments.nb15_images import BATCH_SIZE
    from peftlab.course.experiments.transfer import NEW_TASK, OLD_TASK, lora_config, run_transfer
    from peftlab.workbook.data.images import load_images
    from peftlab.workbook.runtime import one_thread
    from peftlab.workbook.vision import load_vision_model
    base, new, old = load_vision_model(), load_images(NEW_TASK), load_images(OLD_TASK)
    with one_thread():   # as the stored runs: then seed 0 comes out exactly
        return {name: run_transfer(base, "lora", _row(name)["lr"], seed, new_task=new, old_task=old, steps=100,
                                   batch_size=BATCH_SIZE, config=lora_config(patch_conv=name != "LoRA"))
                for name in ("LoRA", "LoRA + patch conv")}


def check_patch_conv(extra_parameters, effect, measured) -> Verdict:
    """🌳 LoRA on the patch embedding: parameters added, and its effect after 100 steps, predicted first;
    `measured` is what patch_conv_runs(0) returns (the learner's seed 0, checked against the stored one),
    and the effect is judged over the stored 5 seeds."""
    from peftlab.workbook.stats import compare
    title = "LoRA on the patch convolution"
    if not (attempted(extra_parameters) and attempted(effect) and attempted(measured)):
        return report(title, None)
    right = R * (PATCH_IN * KERNEL * KERNEL + PATCH_OUT)
    if extra_parameters != right:
        if extra_parameters == R * (PATCH_IN + PATCH_OUT):
            return report(title, False, "A is a convolution with the base's 2 x 2 kernel: it reads in*k*k = 4 "
                          "numbers per output channel, not 1.")
        if extra_parameters == PATCH_OUT * PATCH_IN * KERNEL * KERNEL:
            return report(title, False, "that is the kernel itself; LoRA adds A (r, in*k*k) and B (out, r).")
        return report(title, False, "A: r x (in * k * k), B: out x r, with in = 1, k = 2, out = 64, r = 4.")
    answer = str(effect).strip().lower()
    if answer not in ("helps", "hurts", "no clear change"):
        return report(title, False, "effect is one of 'helps', 'hurts', 'no clear change'.")
    names = ("LoRA", "LoRA + patch conv")
    if not (isinstance(measured, dict) and set(measured) == set(names)):
        return report(title, False, "pass what exercises.patch_conv_runs(0) returns: one run per variant.")
    for name in names:
        run, row = measured[name], _row(name)
        if run.get("seed") != 0 or run.get("test") != row["test"][0]:
            return report(title, False, f"this {name} run is not the stored seed 0: run exercises.patch_conv_runs(0) "
                          "as it is.")
    if measured["LoRA + patch conv"]["trainable"] - measured["LoRA"]["trainable"] != right:
        return report(title, False, "the two runs should differ by the patch convolution's LoRA factors only.")
    found = patch_conv_effect()
    with_conv, without = _row("LoRA + patch conv"), _row("LoRA")
    verdict = compare(with_conv["test"], without["test"], names=("with", "without"))
    numbers = (f"seed 0: with it {measured['LoRA + patch conv']['test']:.3f}, without {measured['LoRA']['test']:.3f}; "
               f"over 5 seeds with minus without {verdict.difference:+.3f} [{verdict.low:+.3f}, {verdict.high:+.3f}] "
               f"(lr {with_conv['lr']:g} and {without['lr']:g})")
    why = {"no clear change": "The new digits are written with the same pen strokes as the old ones, so how "
                              "2 x 2 patches become vectors plausibly needs little change.",
           "helps": "Even the way 2 x 2 patches become vectors gains from adapting to the new digits.",
           "hurts": "Moving the patch embedding moves the input of every layer: it makes training harder."}
    return judge_prediction(title, answer, found, f"{right} parameters added; {numbers}", why[found])
