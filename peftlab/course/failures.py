"""How notebook 16's labs build each failure, and the working setup beside it: fresh models, on the bundled
base, that the notebook and its checkers (course/exercises/nb16_when_peft_goes_wrong.py) both use.

What they measure on these models is in course/symptoms.py.
"""
import torch

from peftlab import LoraConfig, PeftConfig, get_peft_model, set_peft_model_state_dict
from peftlab.hf_format import read_weights
from peftlab.tuners.layer import BaseTunerLayer
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import load_task
from peftlab.workbook.zoo import load_base_model


def sentiment_batch(rows: int = 32) -> dict:
    """A training batch of sentiment test reviews (prompt and label word), the same on every call."""
    tokenizer = load_base_model()[1]
    return PromptTargetCollator(tokenizer)(list(load_task("sentiment")["test"])[:rows])


def lora_model(r: int, alpha: float, **options):
    """A fresh LoRA model on q_proj and v_proj, its A drawn from seed 0."""
    torch.manual_seed(0)
    return get_peft_model(load_base_model()[0], LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"],
                                                           **options))


def lora_everywhere_with_dropout():
    """LoRA r=4 on every linear layer with dropout 0.1: the setting of peft#2196's measurement."""
    return get_peft_model(load_base_model()[0], LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           lora_dropout=0.1))


def checkpointed_lora(reentrant: bool = True, input_hook: bool = False):
    """LoRA on q_proj, v_proj and lm_head over a model whose decoder layers are checkpointed. `input_hook`:
    the embedding's output requires grad (the hook transformers registers since huggingface/transformers#25846;
    off: as before it)."""
    base = load_base_model()[0]
    base.config.use_cache = False
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    if not input_hook:
        base.disable_input_require_grads()
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"]))


def resumed_model(folder):
    """The resume idiom: get_peft_model with the saved config on a model in eval mode (as served, as loaded by
    load_base_model), then the saved weights copied in."""
    model = get_peft_model(load_base_model()[0], PeftConfig.from_pretrained(folder))
    set_peft_model_state_dict(model, read_weights(folder))
    return model


def as_before_the_fix(model):
    """Put back the modes peftlab left before modules created by get_peft_model took their model's mode:
    the PeftModel, its tuner, every wrapper and everything in the wrappers' adapter dicts in training mode
    (nn.Module's default); your model's own layers keep theirs. Returns the model."""
    model.training = model.base_model.training = True
    for wrapper in model.modules():
        if isinstance(wrapper, BaseTunerLayer):
            wrapper.training = True
            for name, child in wrapper.named_children():
                if name != "base_layer":
                    child.train()
    return model
