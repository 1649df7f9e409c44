"""The core's extension points, each used by a tiny method written here the way docs/ARCHITECTURE.md
says to write one: an additive method given only get_delta_weight, model-level shared state saved
under its own key, a method that cannot merge, and a packed (4-bit) base weight behind the
base-weight seam. They are registered for one test at a time, so the library's table of methods
(and the conformance table, which must match it) stays as shipped."""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from lora_testutils import MLP, base_state, build, one_thread, perturb  # noqa: F401 (autouse fixture)
from safetensors.torch import load_file, save_file
from torch import nn

import peftlab
from peftlab import BaseTunerLayer, LayerMethodConfig, LayerTuner, register_method
from peftlab.config import CONFIG_REGISTRY
from peftlab.tuners import TUNERS, LoraModel
from peftlab.tuners.lora import LoraLinear


@contextmanager
def registered(tuner_class):
    register_method(tuner_class)
    try:
        yield
    finally:
        del TUNERS[tuner_class.config_class.peft_type], CONFIG_REGISTRY[tuner_class.config_class.peft_type]


# --- an additive method from get_delta_weight alone: train the full update ΔW directly ---------------
@dataclass
class DeltaConfig(LayerMethodConfig):
    peft_type: ClassVar[str] = "TOY_DELTA"


class DeltaLinear(BaseTunerLayer):
    adapter_layer_names = ("delta",)

    def __init__(self, base_layer, module_name=""):
        super().__init__(base_layer, module_name)
        self.delta = nn.ParameterDict()

    def update_layer(self, name, config):
        shape = self.get_base_weight().shape
        self.delta[name] = nn.Parameter(torch.zeros(shape, dtype=self.compute_dtype))

    def get_delta_weight(self, name):
        return self.delta[name]


class DeltaModel(LayerTuner):
    config_class = DeltaConfig
    layers = {nn.Linear: DeltaLinear}


def test_an_additive_method_needs_only_get_delta_weight(tmp_path):
    with registered(DeltaModel):
        x = torch.randn(5, 8)
        model = peftlab.get_peft_model(build("mlp"), DeltaConfig(target_modules=["fc1"]))
        torch.testing.assert_close(model(x=x), build("mlp")(x=x), rtol=0, atol=0)   # identity at init
        perturb(model)
        fc1 = model.get_base_model().fc1
        by_hand = F.linear(x, fc1.base_layer.weight + fc1.delta["default"], fc1.base_layer.bias)
        torch.testing.assert_close(fc1(x), by_hand)                                 # the default forward
        expected = model(x=x)
        model.save_pretrained(tmp_path)
        assert set(load_file(tmp_path / "adapter_model.safetensors")) == {"base_model.model.fc1.delta"}
        loaded = peftlab.PeftModel.from_pretrained(build("mlp"), tmp_path)
        torch.testing.assert_close(loaded(x=x), expected, rtol=0, atol=0)
        torch.testing.assert_close(model.merge_and_unload()(x=x), expected, rtol=0, atol=1e-6)


# --- model-level shared state: one frozen random vector v for every layer, ΔW = u v^T --------------
@dataclass
class SharedConfig(LayerMethodConfig):
    peft_type: ClassVar[str] = "TOY_SHARED"
    projection_seed: int = 0


class SharedLinear(BaseTunerLayer):
    adapter_layer_names = ("toy_u",)

    def __init__(self, base_layer, module_name="", shared=None):
        super().__init__(base_layer, module_name)
        self.toy_u, self.toy_v = nn.ParameterDict(), shared   # toy_v: the tuner's dict, not saved per layer

    def update_layer(self, name, config):
        self.toy_u[name] = nn.Parameter(torch.zeros(self.get_base_weight().shape[0]))

    def get_delta_weight(self, name):
        return torch.outer(self.toy_u[name], self.toy_v[name][: self.get_base_weight().shape[1]])


class SharedModel(LayerTuner):
    config_class = SharedConfig
    layers = {nn.Linear: SharedLinear}
    shared_state_names = ("toy_v",)

    def __init__(self, model):
        super().__init__(model)
        self.toy_v = nn.ParameterDict()

    def pre_injection_hook(self, adapter_name, config, targets):
        width = max(self.model.get_submodule(n).in_features for n in targets)
        g = torch.Generator().manual_seed(config.projection_seed)
        self.toy_v[adapter_name] = nn.Parameter(torch.randn(width, generator=g), requires_grad=False)

    def create_wrapper(self, module, module_name, adapter_name, config):
        return SharedLinear(module, module_name, shared=self.toy_v)


def test_model_level_state_is_made_before_injection_saved_once_frozen_and_removed_with_its_adapter(tmp_path):
    with registered(SharedModel):
        x = torch.randn(5, 8)
        model = peftlab.get_peft_model(build("mlp"), SharedConfig(target_modules=["fc1", "fc2"]))
        tuner = model.base_model
        assert tuner.toy_v["default"].shape == (16,)            # the widest target's input: fc2's 16
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {
            "base_model.model.fc1.toy_u.default", "base_model.model.fc2.toy_u.default"}
        perturb(model)
        expected = model(x=x)
        model.save_pretrained(tmp_path)
        tensors = load_file(tmp_path / "adapter_model.safetensors")
        assert set(tensors) == {"base_model.toy_v", "base_model.model.fc1.toy_u", "base_model.model.fc2.toy_u"}
        tensors["base_model.toy_v"] *= 2                          # the file's v wins over the seed's
        save_file(tensors, tmp_path / "adapter_model.safetensors")
        loaded = peftlab.PeftModel.from_pretrained(build("mlp"), tmp_path)
        assert torch.equal(loaded.base_model.toy_v["default"], tensors["base_model.toy_v"])
        assert not torch.allclose(loaded(x=x), expected)

        model.add_adapter("other", SharedConfig(target_modules=["fc2"], projection_seed=1))
        assert set(tuner.toy_v) == {"default", "other"}
        model.delete_adapter("other")
        assert set(tuner.toy_v) == {"default"}
        model.unload()
        assert not tuner.toy_v


# --- a method that cannot merge: a parallel bottleneck y = W x + up(relu(down(x))) ------------------
@dataclass
class BottleneckConfig(LayerMethodConfig):
    peft_type: ClassVar[str] = "TOY_BOTTLENECK"


class BottleneckLinear(BaseTunerLayer):
    adapter_layer_names = ("toy_down", "toy_up")
    mergeable = False

    def __init__(self, base_layer, module_name=""):
        super().__init__(base_layer, module_name)
        self.toy_down, self.toy_up = nn.ModuleDict(), nn.ModuleDict()

    def update_layer(self, name, config):
        out_features, in_features = self.get_base_weight().shape
        self.toy_down[name], self.toy_up[name] = nn.Linear(in_features, 2), nn.Linear(2, out_features)
        nn.init.zeros_(self.toy_up[name].weight), nn.init.zeros_(self.toy_up[name].bias)

    def forward_adapters(self, names, x, *args, **kwargs):
        result = self.base_layer(x, *args, **kwargs)
        for name in names:
            result = result + self.toy_up[name](torch.relu(self.toy_down[name](x)))
        return result


class BottleneckModel(LayerTuner):
    config_class = BottleneckConfig
    layers = {nn.Linear: BottleneckLinear}


def test_a_method_that_cannot_merge_says_so_and_still_runs_saves_and_unloads(tmp_path):
    with registered(BottleneckModel):
        x = torch.randn(5, 8)
        model = peftlab.get_peft_model(build("mlp"), BottleneckConfig(target_modules=["fc1"]))
        perturb(model)
        expected, before = model(x=x), base_state(model)
        for attempt in (model.merge_adapter, model.merge_and_unload):
            with pytest.raises(ValueError, match="BottleneckLinear adapters cannot be merged"):
                attempt()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
        model.save_pretrained(tmp_path)
        torch.testing.assert_close(peftlab.PeftModel.from_pretrained(build("mlp"), tmp_path)(x=x), expected)
        torch.testing.assert_close(model.unload()(x=x), build("mlp")(x=x), rtol=0, atol=0)


# --- a packed base weight: two 4-bit codes per byte, read through dequantize() ----------------------
class Packed4bitLinear(nn.Module):
    """A frozen linear layer stored as 4-bit codes (absmax per output row), dequantized on the fly."""
    compute_dtype = torch.float32

    def __init__(self, linear: nn.Linear):
        super().__init__()
        W = linear.weight.detach()
        self.out_features, self.in_features = W.shape
        self.scale = nn.Parameter(W.abs().amax(dim=1, keepdim=True) / 7, requires_grad=False)   # (out, 1)
        self.scale.logical_numel = 0                                                        # storage only
        codes = (W / self.scale).round().clamp(-8, 7).to(torch.int16) + 8                   # 0..15
        packed = (codes[:, 0::2] * 16 + codes[:, 1::2]).to(torch.uint8)                     # (out, in / 2)
        self.packed = nn.Parameter(packed, requires_grad=False)
        self.packed.logical_numel = W.numel()                                               # what it holds
        self.bias = linear.bias

    def dequantize(self):
        high, low = (self.packed // 16).long() - 8, (self.packed % 16).long() - 8
        codes = torch.stack([high, low], dim=-1).flatten(1)                                 # (out, in)
        return codes.float() * self.scale

    def forward(self, x):
        return F.linear(x, self.dequantize(), self.bias)


def quantized_mlp() -> nn.Module:
    model = build("mlp")
    model.fc1, model.fc2 = Packed4bitLinear(model.fc1), Packed4bitLinear(model.fc2)
    return model


def dequantized_mlp() -> nn.Module:
    """The float model with exactly the weights the packed one computes with."""
    model, packed = build("mlp"), quantized_mlp()
    with torch.no_grad():
        model.fc1.weight.copy_(packed.fc1.dequantize()), model.fc2.weight.copy_(packed.fc2.dequantize())
    return model


@pytest.mark.parametrize("use_dora", [False, True])
def test_lora_and_dora_on_a_packed_base_through_the_seam(monkeypatch, use_dora):
    monkeypatch.setitem(LoraModel.layers, Packed4bitLinear, LoraLinear)
    x, config = torch.randn(5, 8), peftlab.LoraConfig(r=2, target_modules=["fc1", "fc2"], use_dora=use_dora)
    assert peftlab.parameter_counts(quantized_mlp())["total"] == peftlab.parameter_counts(build("mlp"))["total"]
    torch.manual_seed(3)
    packed = peftlab.get_peft_model(quantized_mlp(), config)
    torch.manual_seed(3)
    plain = peftlab.get_peft_model(dequantized_mlp(), config)
    perturb(packed), perturb(plain)
    torch.testing.assert_close(packed(x=x), plain(x=x))       # same adapter on the same effective weights
    expected = packed(x=x)
    packed.merge_adapter(exact_unmerge=True)                    # a float layer while merged...
    assert isinstance(packed.get_base_model().fc1.base_layer, nn.Linear)
    packed.unmerge_adapter()                                    # ... and the packed one back
    assert isinstance(packed.get_base_model().fc1.base_layer, Packed4bitLinear)
    torch.testing.assert_close(packed(x=x), expected, rtol=0, atol=0)
    merged = packed.merge_and_unload()                          # merging gives float layers back
    assert isinstance(merged.fc1, nn.Linear) and merged.fc1.weight.dtype == torch.float32
    torch.testing.assert_close(merged(x=x), expected, rtol=0, atol=1e-5)
