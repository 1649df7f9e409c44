"""Every method against every invariant that applies to it (the rows are in conformance_rows.py).

identity at init, merge equals unmerged, unmerge restores, disable equals base, only adapter
parameters train and the base stays untouched, save / load round trip, all-or-nothing loading,
the caller's config is never changed and inference_mode only freezes, and the round trip with
`peft` both ways (same logits to 1e-5; merge_and_unload keeps them to 1e-4)."""
import json

import peft
import pytest
import torch
from conformance_rows import ROWS, cases
from lora_testutils import (  # noqa: F401 (autouse fixture)
    CLASSIFIERS,
    PLAIN,
    base_state,
    build,
    inputs,
    one_thread,
    output,
    perturb,
)
from safetensors.torch import load_file, save_file

import peftlab
from peftlab.nf4 import Linear4bit
from peftlab.tuners import TUNERS, BaseTunerLayer
from peftlab.tuners.wrapper import AdapterWrapper

# peft's notices about what it adjusts (fan_in_fan_out, saving embeddings, soft-prompt caches) are expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*",
                                        "ignore:`past_key_values` is deprecated:FutureWarning")


def base_model(name: str, arch: str):
    """The row's base model on `arch`: the plain one, or what the row makes of it (QLoRA: 4-bit)."""
    row = ROWS[name]
    return row.base(build(arch)) if row.base else build(arch)


def make(name: str, arch: str, perturbed: bool = True):
    """A PeftModel of row `name` on `arch`, its trainable tensors moved away from their init."""
    model = peftlab.get_peft_model(base_model(name, arch), ROWS[name].config(peftlab, arch))
    if perturbed:
        perturb(model)
    return model.eval()


def routed_output(model, arch: str, adapter_names: list[str]):
    out = model(**inputs(arch), adapter_names=adapter_names)
    return out if arch in PLAIN else out.logits


def has_wrappers(model) -> bool:
    return any(isinstance(m, AdapterWrapper) for m in model.modules())


def loss_of(model, arch: str) -> torch.Tensor:
    batch = inputs(arch, batch=4)
    if arch in PLAIN:
        return model(**batch).square().mean()
    if arch in CLASSIFIERS:
        return model(**batch, labels=torch.tensor([0, 1, 2, 1])).loss
    return model(**batch, labels=batch["input_ids"]).loss


def test_every_registered_method_has_a_row_and_every_peft_type_a_method():
    """A method registers itself from its own file; PeftType lists peft's names for the methods
    peft has (and peftlab's own BITFIT, BOTTLENECK), so a new method needs no edit there."""
    in_table = {row.config(peftlab, row.archs[0]).peft_type for row in ROWS.values()}
    assert in_table == set(TUNERS)
    assert {t.value for t in peftlab.PeftType} <= set(TUNERS)


@pytest.mark.parametrize("name,arch", cases(identity_at_init=True))
def test_identity_at_init(name, arch):
    model = make(name, arch, perturbed=False)
    torch.testing.assert_close(output(model, arch), output(base_model(name, arch), arch), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,arch", cases(mergeable=True))
def test_merge_equals_unmerged_and_merge_and_unload_gives_the_plain_model(name, arch):
    model = make(name, arch)
    unmerged = output(model, arch)
    before = base_state(model)
    model.merge_adapter()
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items() if "base_layer" in k)
    torch.testing.assert_close(output(model, arch), unmerged, rtol=0, atol=2e-5)
    model.merge_adapter()   # idempotent: the update is not added twice
    torch.testing.assert_close(output(model, arch), unmerged, rtol=0, atol=2e-5)
    model.unmerge_adapter()
    wrapped = sum(isinstance(m, BaseTunerLayer) for m in model.modules())
    packed_before = sum(isinstance(m, Linear4bit) for m in model.modules())
    plain = model.merge_and_unload()
    assert type(plain) is type(build(arch)) and not has_wrappers(plain)
    if ROWS[name].base is None:
        assert set(plain.state_dict()) == set(build(arch).state_dict())
    else:   # merging into a 4-bit layer gives a float one; the layers not adapted stay 4-bit
        assert sum(isinstance(m, Linear4bit) for m in plain.modules()) == packed_before - wrapped
    torch.testing.assert_close(output(plain, arch), unmerged, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name,arch", cases(mergeable=False))
def test_methods_that_cannot_merge_say_so_and_change_nothing(name, arch):
    model = make(name, arch)
    expected, before = output(model, arch), base_state(model)
    for attempt in (model.merge_adapter, model.merge_and_unload):
        with pytest.raises(ValueError, match="cannot be merged"):
            attempt()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    torch.testing.assert_close(output(model, arch), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name,arch", cases(mergeable=True))
def test_unmerge_restores_the_base_up_to_rounding_or_exactly_on_request(name, arch):
    model = make(name, arch)
    unmerged, before = output(model, arch), base_state(model)
    model.merge_adapter()
    model.unmerge_adapter()
    after = model.state_dict()
    assert all(torch.allclose(after[k], v, rtol=0, atol=1e-5) for k, v in before.items())
    torch.testing.assert_close(output(model, arch), unmerged, rtol=0, atol=2e-5)
    model.merge_adapter(exact_unmerge=True)
    model.unmerge_adapter()
    assert all(torch.equal(model.state_dict()[k], after[k]) for k in before)   # bit for bit


@pytest.mark.parametrize("name,arch", cases(trains_base=False))
def test_disable_equals_base_and_reenabling_restores(name, arch):
    model, base = make(name, arch), output(base_model(name, arch), arch)
    adapted = output(model, arch)
    real = adapted[:, -base.shape[1]:]   # prompt tuning's logits have P virtual positions in front
    assert not torch.allclose(real, base, atol=1e-3)
    with model.disable_adapter():
        torch.testing.assert_close(output(model, arch), base, rtol=0, atol=1e-5)
    torch.testing.assert_close(output(model, arch), adapted, rtol=0, atol=0)


@pytest.mark.parametrize("name,arch", cases(mixed_batches=True))
def test_a_mixed_batch_runs_each_example_through_its_own_adapter_or_none(name, arch):
    model = make(name, arch)
    mixed = routed_output(model, arch, ["default", "__base__", "default"])
    adapted = output(model, arch)
    with model.disable_adapter():
        base = output(model, arch)
    torch.testing.assert_close(mixed, torch.stack([adapted[0], base[1], adapted[2]]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,arch", cases(mixed_batches=False))
def test_methods_without_mixed_batches_say_so(name, arch):
    with pytest.raises(ValueError, match="layer methods only"):
        routed_output(make(name, arch), arch, ["default", "__base__", "default"])


@pytest.mark.parametrize("name,arch", cases())
def test_training_moves_only_adapter_parameters_and_the_base_stays_bit_identical(name, arch):
    model = make(name, arch, perturbed=False).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default" in n or (ROWS[name].trains_base and n.endswith(".bias")) for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss_of(model, arch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    params = dict(model.named_parameters())
    assert all(params[n].grad is None for n in frozen)
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    moved = {n for n, v in start.items() if not torch.equal(params[n], v)}
    assert moved == set(start), f"did not train: {sorted(set(start) - moved)}"


@pytest.mark.parametrize("name,arch", cases())
def test_save_load_round_trip(tmp_path, name, arch):
    model = make(name, arch)
    expected = output(model, arch)
    model.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    assert keys and not any(".default" in k or "original_module" in k for k in keys)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == model.peft_config["default"].peft_type and config["inference_mode"]
    loaded = peftlab.PeftModel.from_pretrained(base_model(name, arch), tmp_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(output(loaded, arch), expected, rtol=0, atol=1e-6)
    if ROWS[name].resumable:
        again = peftlab.PeftModel.from_pretrained(base_model(name, arch), tmp_path, is_trainable=True)
        trainable = sum(p.requires_grad for p in make(name, arch).parameters())
        assert sum(p.requires_grad for p in again.parameters()) == trainable
    else:
        with pytest.raises(ValueError, match="cannot be trained further"):
            peftlab.PeftModel.from_pretrained(base_model(name, arch), tmp_path, is_trainable=True)


@pytest.mark.parametrize("damage", ["missing", "shape"])
@pytest.mark.parametrize("name,arch", cases())
def test_a_damaged_folder_is_refused_and_changes_nothing(tmp_path, name, arch, damage):
    make(name, arch).save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(path)
    key = sorted(tensors)[0]
    if damage == "missing":
        del tensors[key]
    else:
        tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])
    save_file(tensors, path)
    base = base_model(name, arch)
    before = base_state(base)
    with pytest.raises(ValueError, match="nothing was changed"):
        peftlab.PeftModel.from_pretrained(base, tmp_path)
    assert not has_wrappers(base) and all(torch.equal(base.state_dict()[k], v) for k, v in before.items())
    model = make(name, arch)
    snapshot = base_state(model)
    with pytest.raises(ValueError, match="nothing was changed|PiSSA"):   # PiSSA shares a model with no one
        model.load_adapter(tmp_path, "broken")
    assert list(model.peft_config) == ["default"] and model.state_dict().keys() == snapshot.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snapshot.items())


@pytest.mark.parametrize("name,arch", cases())
def test_the_callers_config_is_never_changed_and_inference_mode_only_freezes(name, arch):
    config = ROWS[name].config(peftlab, arch)
    snapshot = config.to_dict()
    torch.manual_seed(5)
    trainable = peftlab.get_peft_model(base_model(name, arch), config)
    assert config.to_dict() == snapshot
    frozen_config = ROWS[name].config(peftlab, arch)
    frozen_config.inference_mode = True
    torch.manual_seed(5)
    frozen = peftlab.get_peft_model(base_model(name, arch), frozen_config)
    assert not any(p.requires_grad for p in frozen.parameters())
    ours, theirs = trainable.state_dict(), frozen.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("name,arch", cases(in_peft=True))
def test_a_peftlab_folder_loads_in_peft(tmp_path, name, arch):
    ours = make(name, arch)
    expected = output(ours, arch)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(base_model(name, arch), tmp_path).eval()
    torch.testing.assert_close(output(theirs, arch), expected, rtol=0, atol=1e-5)
    if ROWS[name].mergeable:
        torch.testing.assert_close(output(theirs.merge_and_unload(), arch), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name,arch", cases(in_peft=True))
def test_a_peft_folder_loads_in_peftlab(tmp_path, name, arch):
    theirs = peft.get_peft_model(base_model(name, arch), ROWS[name].config(peft, arch))
    perturb(theirs)
    expected = output(theirs.eval(), arch)
    theirs.save_pretrained(tmp_path)
    ours = peftlab.PeftModel.from_pretrained(base_model(name, arch), tmp_path)
    torch.testing.assert_close(output(ours, arch), expected, rtol=0, atol=1e-5)
    if ROWS[name].mergeable:
        torch.testing.assert_close(output(ours.merge_and_unload(), arch), expected, rtol=0, atol=1e-4)
