"""Checkers for 17_build_a_method."""
import torch

from peftlab.course.conformance import grade
from peftlab.model import get_peft_model
from peftlab.tuners import FourierFTConfig, HRAConfig
from peftlab.tuners.layer_tuner import LayerTuner
from peftlab.workbook.zoo import load_base_model

from .checking import Verdict, attempted, judge_prediction, report

TARGETS = ["q_proj", "v_proj"]
ADAPTED_LAYERS, IN_FEATURES = 8, 128      # q_proj and v_proj of pico-llama-1m's 4 layers, 128 inputs each
# The grader's configuration of each method, and the trained numbers its formula gives on those 8 layers.
SETUPS = {
    "HRA": (lambda: HRAConfig(r=8, target_modules=TARGETS), ADAPTED_LAYERS * IN_FEATURES * 8),      # r · in
    "FOURIERFT": (lambda: FourierFTConfig(n_frequency=896, init_weights=True, target_modules=TARGETS),
                  ADAPTED_LAYERS * 896),                                                             # n
}


def check_my_method(my_method) -> Verdict:
    """🌳 Your method class (HRA or FourierFT), graded live by the conformance invariants and by peft."""
    title = "Your method"
    if not attempted(my_method):
        return report(title, None)
    if not (isinstance(my_method, type) and issubclass(my_method, LayerTuner)):
        return report(title, False, f"pass the tuner class itself (MyHRAModel or MyFourierFTModel, not an instance "
                      f"or the layer class); got {my_method!r}.")
    if my_method.__module__.startswith("peftlab."):
        return report(title, False, f"{my_method.__name__} is the library's own class: grade the one you wrote.")
    peft_type = getattr(getattr(my_method, "config_class", None), "peft_type", None)
    if peft_type not in SETUPS:
        return report(title, False, "its config_class must be HRAConfig or FourierFTConfig (peft's field names, so "
                      f"that peft can read your folders); it is {getattr(my_method, 'config_class', None)!r}.")
    config, trainable = SETUPS[peft_type]
    result = grade(my_method, config, expected_trainable=trainable)
    print(result)
    broken = result.first_failure
    if broken is not None:
        return report(title, False, f"'{broken.invariant.name}' fails ({broken.detail}). What that means: "
                      f"{broken.invariant.meaning}.")
    if not result.passed:
        return report(title, False, "it plugs in, but peft is not installed, so the round trip with peft was not "
                      "checked: pip install peft and run this cell again.")
    return report(title, True, f"every invariant the library's methods pass holds for {my_method.__name__}, and "
                  "peft reads its folders to the same logits. As a file in peftlab/tuners/ with @register_method, "
                  "and one row in tests/conformance_rows.py, it would be a method of the library.")


BLOCK, WIDTH = 32, 4096     # peft's default oft_block_size; a 7B model's hidden size


def check_oft_parameters(answer) -> Verdict:
    """🌱 Numbers OFT trains in one 4096-input layer with peft's default block size 32 (against LoRA r=8's 65,536)."""
    title = "OFT's parameters at 4096"
    if not attempted(answer):
        return report(title, None)
    blocks = WIDTH // BLOCK
    right = blocks * BLOCK * (BLOCK - 1) // 2
    if answer == right:
        return report(title, True, f"{blocks} blocks x {BLOCK}·{BLOCK - 1}/2 = {right:,}, about LoRA r=8's "
                      f"{8 * 2 * WIDTH:,} on a {WIDTH} x {WIDTH} layer; one full rotation would take "
                      f"{WIDTH * (WIDTH - 1) // 2:,}. The block size plays the part of LoRA's rank: in·(b − 1)/2 numbers a layer.")
    hints = {blocks * BLOCK ** 2: "that is every entry of every block; a skew-symmetric Q is free only above its "
                                  "diagonal (the diagonal is 0, the lower half is minus the upper).",
             blocks * BLOCK * (BLOCK - 1): "both triangles: the lower one is minus the upper, so only half is free.",
             WIDTH * (WIDTH - 1) // 2: "that is one rotation of all 4096 inputs; the blocks cut it into 128 small ones.",
             BLOCK * (BLOCK - 1) // 2: "that is one block; the layer has 4096 / 32 of them (block_share=False)."}
    return report(title, False, hints.get(answer, "number of blocks x the free entries of one skew-symmetric block."))


RANK_CHOICES = ("at most 4", "5 to 127", "128")


def fourierft_rank() -> int:
    """The rank of ΔW in layer 0's q_proj (128 x 128) of a fresh FourierFT adapter, 896 coefficients a layer
    drawn as peft's default draws them (N(0, 1), seed 0)."""
    torch.manual_seed(0)
    model = get_peft_model(load_base_model()[0], FourierFTConfig(n_frequency=896, target_modules=TARGETS))
    with torch.no_grad():
        delta = model.base_model.model.model.layers[0].self_attn.q_proj.get_delta_weight("default")
    return int(torch.linalg.matrix_rank(delta))


def check_fourierft_rank(prediction, measured) -> Verdict:
    """🌿 Predict, then measure: at LoRA r=4's budget (896 numbers a layer), what rank has FourierFT's ΔW?
    `prediction`: one of RANK_CHOICES; `measured`: torch.linalg.matrix_rank of layer 0's q_proj ΔW in a
    fresh FourierFTConfig(n_frequency=896, target_modules=["q_proj", "v_proj"]) adapter (computed again here)."""
    title = "FourierFT's rank"
    if not (attempted(prediction) and attempted(measured)):
        return report(title, None)
    if prediction not in RANK_CHOICES:
        return report(title, False, f"predict one of {', '.join(map(repr, RANK_CHOICES))}.")
    truth = fourierft_rank()
    if isinstance(measured, torch.Tensor):
        measured = measured.item()
    if measured != truth:
        return report(title, False, f"measured again here, the rank is {truth}: take get_delta_weight('default') "
                      "of model.base_model.model.model.layers[0].self_attn.q_proj and pass "
                      "int(torch.linalg.matrix_rank(delta)).")
    found = RANK_CHOICES[0] if truth <= 4 else RANK_CHOICES[1] if truth < 128 else RANK_CHOICES[2]
    lesson = ("Each coefficient is one 2-D wave, a rank-one matrix (a row frequency times a column frequency); the "
              "real part adds its mirror image. 896 of them span every one of the 128 dimensions, where LoRA's r=4 "
              "spends the same budget on a rank-4 update and HRA's 8 reflections change W by rank 8 at most. The "
              "same parameter count buys very different updates: the count alone does not say what a method can "
              "express.")
    return judge_prediction(title, prediction, found, f"rank of FourierFT's ΔW (128 x 128, 896 coefficients): {truth}",
                            lesson)
