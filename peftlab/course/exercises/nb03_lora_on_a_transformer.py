"""Checkers for 03_lora_on_a_transformer."""
import copy

import torch

from peftlab.model import get_peft_model
from peftlab.tuners import LoraConfig

from .checking import Verdict, attempted, call_stub, report


def check_adapter_weight_bytes(answer, peft_model) -> Verdict:
    """🌱 Bytes of weights in the saved adapter: every trainable number, stored in fp32."""
    if not attempted(answer):
        return report("adapter weight bytes", None)
    trainable = peft_model.get_nb_trainable_parameters()[0]
    truth = 4 * trainable
    if answer == truth:
        return report("adapter weight bytes", True, f"{truth:,} bytes: 4 per trainable parameter.")
    if answer == trainable:
        return report("adapter weight bytes", False, "that is the number of parameters; each is a 4-byte float32.")
    if answer == 2 * truth:
        return report("adapter weight bytes", False, "only the weights are saved: no gradients, no Adam state.")
    return report("adapter weight bytes", False, "count the trainable parameters (get_nb_trainable_parameters) "
                  "and the bytes of one float32.")


def check_last_two_down_proj(pattern, base_model) -> Verdict:
    """🌿 A regex (full match) targeting only mlp.down_proj of the last two decoder layers."""
    if not attempted(pattern):
        return report("regex targeting", None)
    if not isinstance(pattern, str):
        return report("regex targeting", False, "target_modules as a *string* is read as a regular expression.")
    n = len(base_model.model.layers)
    wanted = {f"model.layers.{i}.mlp.down_proj" for i in (n - 2, n - 1)}
    try:
        wrapped = get_peft_model(copy.deepcopy(base_model), LoraConfig(r=2, target_modules=pattern))
    except ValueError as error:
        return report("regex targeting", False, f"peftlab refused it: {error}")
    got = {name.removeprefix("base_model.model.") for name, m in wrapped.named_modules() if hasattr(m, "lora_A")}
    if got == wanted:
        return report("regex targeting", True, f"{sorted(got)}")
    return report("regex targeting", False, f"it targets {sorted(got)}; wanted {sorted(wanted)}. "
                  "The regex must match the *whole* module name.")


def check_merge_by_hand(fn, peft_model) -> Verdict:
    """🌳 The merged weight of layer 0's q_proj, computed from the LoRA factors."""
    result = call_stub(fn, peft_model)
    if not attempted(result):
        return report("merge by hand", None)
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    truth = copy.deepcopy(peft_model).merge_and_unload().model.layers[0].self_attn.q_proj.weight
    if result.shape != truth.shape:
        return report("merge by hand", False, f"shape {tuple(result.shape)}, expected {tuple(truth.shape)} (out, in).")
    if torch.allclose(result, truth, atol=1e-6):
        return report("merge by hand", True, "W0 + scaling * B @ A, as merge_and_unload computes it.")
    unscaled = layer.base_layer.weight + layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    if torch.allclose(result, unscaled, atol=1e-6):
        return report("merge by hand", False, "multiply B @ A by layer.scaling['default'] (alpha / r).")
    return report("merge by hand", False, "W0 is layer.base_layer.weight; A and B are the weights of "
                  "layer.lora_A['default'] and layer.lora_B['default'].")
