"""Adding an adapter never changes a model's mode: modules it creates take the mode of the model they join.

A new nn.Module starts in training mode, so before this rule an adapter added to a model in eval mode
(get_peft_model, add_adapter, load_adapter) ran its dropout at inference: a different output on every
call while the model reported eval mode (notebook 16's dropout lab; peft#3753 reports the same in peft).
"""
import pytest
import torch
from lora_testutils import build, inputs, one_thread  # noqa: F401  (one_thread: a fixture)

from peftlab import LoraConfig, PeftModel, PromptEncoderConfig, get_peft_model

LLAMA = ["q_proj", "v_proj"]


def dropping(**options):
    """LoRA with a large dropout and non-zero B, so that dropout at work shows in every output."""
    return LoraConfig(r=4, target_modules=LLAMA, lora_dropout=0.5, init_lora_weights=False, **options)


def in_training_mode(model) -> list[str]:
    return [name for name, module in model.named_modules() if module.training]


def twice(model):
    with torch.no_grad():
        return model(**inputs("llama")).logits, model(**inputs("llama")).logits


def test_get_peft_model_on_a_model_in_eval_mode_gives_a_model_in_eval_mode():
    model = get_peft_model(build("llama"), dropping())          # build() returns the model in eval mode
    assert not model.training and in_training_mode(model) == []
    first, second = twice(model)
    assert torch.equal(first, second), "dropout is off: the same input gives the same output"
    model.train()
    first, second = twice(model)
    assert not torch.equal(first, second), "and model.train() still turns it on"


def test_get_peft_model_on_a_model_in_training_mode_trains_as_before():
    model = get_peft_model(build("llama").train(), dropping())
    assert model.training and in_training_mode(model) == [name for name, _ in model.named_modules()]


def test_a_wrapper_takes_the_mode_of_the_layer_it_wraps_in_a_model_of_mixed_modes():
    base = build("llama").train()
    base.model.layers[0].self_attn.q_proj.eval()                # one layer frozen in eval mode on purpose
    model = get_peft_model(base, dropping())
    q0, q1 = (model.get_base_model().model.layers[i].self_attn.q_proj for i in (0, 1))
    assert not q0.training and not q0.lora_dropout["default"].training
    assert q1.training and q1.lora_dropout["default"].training


def test_add_adapter_and_load_adapter_keep_an_eval_model_in_eval_mode(tmp_path):
    model = get_peft_model(build("llama"), dropping())
    model.save_pretrained(tmp_path)
    model.add_adapter("added", dropping())
    model.load_adapter(tmp_path, "loaded")
    for name in ("added", "loaded"):
        model.set_adapter(name)
        assert in_training_mode(model) == [], name
        first, second = twice(model)
        assert torch.equal(first, second), name


def test_an_adapter_added_in_training_mode_trains_with_dropout():
    model = get_peft_model(build("llama"), dropping()).train()
    model.add_adapter("added", dropping())
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    assert layer.lora_dropout["added"].training


def test_is_trainable_unfreezes_the_adapter_and_leaves_the_mode_to_the_model(tmp_path):
    get_peft_model(build("llama"), dropping()).save_pretrained(tmp_path)
    for base in (build("llama"), build("llama").train()):
        loaded = PeftModel.from_pretrained(base, tmp_path, is_trainable=True)
        assert loaded.get_nb_trainable_parameters()[0] > 0
        assert in_training_mode(loaded) == ([name for name, _ in loaded.named_modules()] if base.training else [])
    assert in_training_mode(PeftModel.from_pretrained(build("llama").train(), tmp_path)) == [], (
        "loaded for inference: eval mode, whatever the model's mode was")


def test_a_soft_prompt_encoder_joins_an_eval_model_in_eval_mode():
    config = PromptEncoderConfig(num_virtual_tokens=4, encoder_hidden_size=16, encoder_dropout=0.5,
                                 task_type="CAUSAL_LM")
    model = get_peft_model(build("llama"), config)
    assert in_training_mode(model) == []
    assert in_training_mode(get_peft_model(build("llama").train(), config))


@pytest.mark.parametrize("mode", [True, False])
def test_modules_to_save_copies_take_the_mode_of_the_module_they_copy(mode):
    base = build("bert").train(mode)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["query"], modules_to_save=["classifier"]))
    head = model.get_base_model().classifier
    assert head.training == mode and head.modules_to_save["default"].training == mode
