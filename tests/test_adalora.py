"""What is AdaLoRA's own (Zhang et al. 2023, arXiv:2303.10512): the update in SVD form P Λ Q with Λ = 0
at the start, its scale, the orthogonality penalty in the loss, the cubic budget schedule, the
importance scores, masking to the budget, and the rank_pattern that the final allocation writes,
saving keeps and loading honours. The strongest check trains peft and peftlab side by side on the
same weights and batches. (The invariants every method shares are in test_conformance.py.)"""
import json

import peft
import pytest
import torch
from lora_testutils import build, inputs, one_thread, output, perturb  # noqa: F401 (autouse fixture)
from safetensors.torch import load_file

import peftlab
from peftlab import get_peft_model
from peftlab.tuners.adalora import AdaLoraLayer
from peftlab.workbook.training import train

# peft also checks AdaLoRA's rank_pattern as if it were LoRA's ranks and warns that no key matched.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*",
                                        "ignore:The following rank_pattern keys:RuntimeWarning")

TARGETS = ["q_proj", "v_proj", "down_proj"]   # Llama: 32 -> 32, 32 -> 16, 64 -> 32; two decoder layers
Q_PROJ = "model.layers.0.self_attn.q_proj"


def config(lib=peftlab, **kw):
    options = {"init_r": 4, "target_r": 2, "lora_alpha": 8, "total_step": 12, "target_modules": TARGETS, **kw}
    if lib is peft:
        options.setdefault("task_type", "CAUSAL_LM")   # peft adds the penalty only with a task type
    return lib.AdaLoraConfig(**options)


def adalora_layers(model) -> dict[str, AdaLoraLayer]:
    return model.base_model.adalora_layers("default")


def lm_loss(model, batch=None):
    batch = batch or inputs("llama", batch=4)
    return model(**batch, labels=batch["input_ids"]).loss


def token_data(n=32, seq=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, 100, (seq,), generator=g)} for _ in range(n)]


def collate(rows):
    ids = torch.stack([r["input_ids"] for r in rows])
    return {"input_ids": ids, "labels": ids}


def twins(**kw):
    """peft's and peftlab's AdaLoRA on the same base and the same adapter weights."""
    theirs = peft.get_peft_model(build("llama"), config(peft, **kw))
    ours = get_peft_model(build("llama"), config(**kw))
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


# --- the SVD form --------------------------------------------------------------------------------
def test_the_adapted_model_starts_as_the_base_model_because_lambda_starts_at_zero():
    model = get_peft_model(build("llama"), config())
    for layer in adalora_layers(model).values():
        assert torch.equal(layer.lora_E["default"], torch.zeros(4, 1))
        for factor in (layer.lora_A["default"], layer.lora_B["default"]):   # P, Q ~ N(0, 0.02)
            assert 0.005 < factor.std().item() < 0.05
    torch.testing.assert_close(output(model, "llama"), output(build("llama"), "llama"), rtol=0, atol=0)


def test_the_update_is_alpha_over_init_r_times_p_diag_lambda_q_as_in_peft():
    ours, theirs = twins()
    perturb(theirs)
    ours.load_state_dict(theirs.state_dict())
    layer = adalora_layers(ours)[Q_PROJ]
    P, Q, E = layer.lora_B["default"], layer.lora_A["default"], layer.lora_E["default"]
    assert (P.shape, E.shape, Q.shape) == ((32, 4), (4, 1), (4, 32))
    scale = 8 / (4 + 1e-5)   # lora_alpha / init_r; peft adds 1e-5 to the rank, and so do we
    delta = scale * P @ torch.diag(E.view(-1)) @ Q
    torch.testing.assert_close(layer.get_delta_weight("default"), delta)
    their_layer = theirs.base_model.model.get_submodule(Q_PROJ)
    assert torch.equal(layer.get_delta_weight("default"), their_layer.get_delta_weight("default"))
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ delta.T)


def test_cutting_triplets_keeps_the_scale_so_masked_then_cut_gives_the_same_update():
    model = get_peft_model(build("llama"), config())
    perturb(model)
    layer = adalora_layers(model)[Q_PROJ]
    keep = [True, False, True, False]
    with torch.no_grad():
        layer.lora_E["default"][1:4:2] = 0   # masked: λ = 0
    masked = layer.get_delta_weight("default")
    layer.keep_triplets("default", keep)
    assert layer.r["default"] == 2 and layer.lora_A["default"].shape == (2, 32)
    assert layer.ranknum["default"].item() == 4                      # still init_r
    torch.testing.assert_close(layer.get_delta_weight("default"), masked)
    with pytest.raises(ValueError, match="another init_r"):
        layer.keep_triplets("default", [True] * 4)


# --- the orthogonality penalty ---------------------------------------------------------------------
def test_the_orthogonality_penalty_is_the_mean_distance_of_the_grams_from_identity():
    model = get_peft_model(build("llama"), config())
    perturb(model)
    distances = []
    for layer in adalora_layers(model).values():
        P, Q = layer.lora_B["default"], layer.lora_A["default"]
        distances += [((Q @ Q.T - torch.eye(4)) ** 2).sum().sqrt(), ((P.T @ P - torch.eye(4)) ** 2).sum().sqrt()]
    assert len(distances) == 12   # six layers, P and Q each
    by_hand = sum(distances) / len(distances)
    torch.testing.assert_close(model.base_model.orthogonality_penalty(), by_hand)

    # Orthonormal P and Q have no penalty.
    for layer in adalora_layers(model).values():
        with torch.no_grad():
            Q, P = layer.lora_A["default"], layer.lora_B["default"]
            Q.copy_(torch.linalg.qr(torch.randn(Q.shape[1], 4))[0].T)   # orthonormal rows
            P.copy_(torch.linalg.qr(torch.randn(P.shape[0], 4))[0])     # orthonormal columns
    assert model.base_model.orthogonality_penalty().item() < 1e-5


def test_the_penalty_is_in_the_loss_when_labels_are_given_exactly_as_peft_adds_it():
    ours, theirs = twins(orth_reg_weight=0.3)
    perturb(theirs)
    ours.load_state_dict(theirs.state_dict())
    penalty = ours.base_model.orthogonality_penalty()
    with ours.disable_adapter():       # no adapter, no penalty (peft would still add it here)
        base_loss = lm_loss(ours)
    loss = lm_loss(ours)
    torch.testing.assert_close(loss, lm_loss(theirs), rtol=0, atol=1e-6)
    # Without the penalty the loss is the model's own: the difference is 0.3 · R.
    ours.peft_config["default"].orth_reg_weight = 0.0
    torch.testing.assert_close(loss - lm_loss(ours), 0.3 * penalty)
    assert not torch.equal(base_loss, loss)
    assert ours(**inputs("llama")).loss is None   # no labels, no loss to add it to


# --- the budget schedule --------------------------------------------------------------------------
def test_the_budget_falls_on_the_cubic_schedule_between_tinit_and_total_step_minus_tfinal():
    kw = {"init_r": 6, "target_r": 2, "total_step": 100, "tinit": 10, "tfinal": 20, "deltaT": 5}
    ours, theirs = twins(**kw)
    allocator = ours.base_model.rankallocator
    b0, bT = 6 * 6, 2 * 6   # six layers
    assert (allocator.init_budget, allocator.target_budget) == (b0, bT)

    def formula(t):
        return int(bT + (b0 - bT) * (1 - (t - 10) / (100 - 20 - 10)) ** 3)

    assert allocator.budget_schedule(0) == allocator.budget_schedule(10) == (b0, False)   # warm-up: all kept
    assert allocator.budget_schedule(11) == (formula(11), False)                           # 11 % deltaT != 0
    assert allocator.budget_schedule(45) == (formula(45), True) and formula(45) == 15     # the middle: 12 + 24 / 8
    assert allocator.budget_schedule(80) == (bT, True)                                     # T - tfinal: the target
    assert allocator.budget_schedule(81) == allocator.budget_schedule(100) == (bT, True)   # the fixed window
    for step in range(101):
        assert allocator.budget_schedule(step) == theirs.base_model.rankallocator.budget_schedule(step)


# --- importance ------------------------------------------------------------------------------------
def test_importance_is_an_ema_of_the_sensitivity_times_an_ema_of_its_uncertainty():
    model = get_peft_model(build("llama"), config(tinit=5, beta1=0.8, beta2=0.7)).train()
    perturb(model)
    allocator, layers = model.base_model.rankallocator, adalora_layers(model)
    name = f"{Q_PROJ}.lora_A.default"
    Q = layers[Q_PROJ].lora_A["default"]
    averages = []
    for step in (1, 2):
        model.zero_grad()
        lm_loss(model, inputs("llama", batch=4, seed=step)).backward()
        sensitivity = (Q * Q.grad).abs()   # I = |w · ∇w|
        model.base_model.update_and_allocate(step)
        averages.append((sensitivity, allocator.exp_avg_ipt[name].clone(), allocator.exp_avg_unc[name].clone()))
    (I1, avg1, unc1), (I2, avg2, unc2) = averages
    torch.testing.assert_close(avg1, 0.2 * I1)                         # Ī_1 = (1 − β1) I_1
    torch.testing.assert_close(unc1, 0.3 * (I1 - avg1).abs())          # Ū_1 = (1 − β2) |I_1 − Ī_1|
    torch.testing.assert_close(avg2, 0.8 * avg1 + 0.2 * I2)
    torch.testing.assert_close(unc2, 0.7 * unc1 + 0.3 * (I2 - avg2).abs())
    # A triplet's score: s(λ_i) + mean_j s(Q_ij) + mean_j s(P_ji), with s = Ī · Ū.
    score = {f: allocator.score(f"{Q_PROJ}.{f}.default") for f in ("lora_A", "lora_B", "lora_E")}
    by_hand = score["lora_E"].view(-1) + score["lora_A"].mean(dim=1) + score["lora_B"].mean(dim=0)
    torch.testing.assert_close(allocator.triplet_scores(layers)[Q_PROJ], by_hand)


def test_masking_keeps_exactly_the_budget_and_leaves_p_and_q_alone():
    model = get_peft_model(build("llama"), config(init_r=6)).train()
    perturb(model)
    lm_loss(model).backward()
    allocator, layers = model.base_model.rankallocator, adalora_layers(model)
    allocator.update_importance(layers)
    before = {n: (layer.lora_A["default"].clone(), layer.lora_B["default"].clone()) for n, layer in layers.items()}
    for budget in (30, 17, 12, 1):
        pattern = allocator.mask_to_budget(layers, budget)
        assert set(pattern) == {f"{n}.lora_E" for n in layers}
        assert sum(map(sum, pattern.values())) == budget
        for module, layer in layers.items():
            kept = torch.tensor(pattern[f"{module}.lora_E"])
            assert (layer.lora_E["default"].view(-1)[~kept] == 0).all()
            assert torch.equal(layer.lora_A["default"], before[module][0])
    assert allocator.mask_to_budget(layers, allocator.init_budget) == {f"{n}.lora_E": [True] * 6 for n in layers}


def test_a_masked_triplet_keeps_its_gradient_so_it_can_win_its_place_back():
    model = get_peft_model(build("llama"), config()).train()
    perturb(model)
    layer = adalora_layers(model)[Q_PROJ]
    with torch.no_grad():
        layer.lora_E["default"][0] = 0
    lm_loss(model).backward()
    assert layer.lora_E["default"].grad[0].abs().item() > 0


# --- peft as the oracle: the same training, step by step --------------------------------------------
def test_training_with_update_and_allocate_gives_peft_s_masks_and_logits():
    kw = {"init_r": 4, "target_r": 2, "total_step": 12, "tinit": 2, "tfinal": 3, "deltaT": 2}
    ours, theirs = twins(**kw)
    runs = {}
    for lib, model in (("peftlab", ours), ("peft", theirs)):
        patterns = []

        def on_step(step, model=model, patterns=patterns):
            model.base_model.update_and_allocate(step)
            found = model.peft_config["default"].rank_pattern
            patterns.append(found and {k.removesuffix(".default"): v for k, v in found.items()})

        history = train(model, token_data(), collate, steps=12, lr=1e-2, batch_size=8, on_step=on_step,
                        progress=False, device="cpu")
        runs[lib] = history.loss, patterns, output(model, "llama")
    (our_loss, our_patterns, our_logits), (their_loss, their_patterns, their_logits) = runs["peftlab"], runs["peft"]
    assert our_patterns == their_patterns
    assert our_patterns[:3] == [None] * 3                     # warm-up, then step 3 is not a multiple of deltaT
    kept = [sum(map(sum, p.values())) for p in our_patterns[3:]]
    assert kept[0] == 16 and kept[-1] == 12 == 2 * 6          # falls to target_r per layer on average
    assert len({len(p) for p in our_patterns[3:]}) == 1 and len(set(map(str, our_patterns[-4:]))) == 1   # fixed
    assert our_loss == pytest.approx(their_loss, abs=1e-5)
    torch.testing.assert_close(our_logits, their_logits, rtol=0, atol=1e-5)


def test_train_calls_on_step_with_the_global_step_so_the_last_step_fixes_the_pattern():
    model = get_peft_model(build("llama"), config(total_step=8))
    train(model, token_data(), collate, steps=8, lr=1e-2, batch_size=8, progress=False, device="cpu",
          on_step=model.base_model.update_and_allocate)
    pattern = model.peft_config["default"].rank_pattern
    assert pattern is not None and sum(map(sum, pattern.values())) == 2 * 6
    for module, layer in adalora_layers(model).items():
        kept = torch.tensor(pattern[f"{module}.lora_E"])
        assert (layer.lora_E["default"].view(-1)[~kept] == 0).all()


# --- the rank pattern: saved, and honoured on load, in both libraries --------------------------------
@pytest.fixture
def allocated(tmp_path):
    """A model trained through its final allocation, and the folder it saved."""
    model = get_peft_model(build("llama"), config(total_step=6, tfinal=2))
    train(model, token_data(), collate, steps=6, lr=1e-2, batch_size=8, progress=False, device="cpu",
          on_step=model.base_model.update_and_allocate)
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_the_folder_keeps_only_the_kept_triplets_and_the_pattern_without_the_adapter_name(allocated):
    model, folder = allocated
    pattern = model.peft_config["default"].rank_pattern
    saved = json.loads((folder / "adapter_config.json").read_text())["rank_pattern"]
    assert saved == pattern and all(k.endswith(".lora_E") for k in saved)
    tensors = load_file(folder / "adapter_model.safetensors")
    assert not any("ranknum" in k for k in tensors)   # peft does not save it: it is init_r
    for module, keep in saved.items():
        prefix = f"base_model.model.{module.removesuffix('.lora_E')}"
        assert tensors[f"{prefix}.lora_E"].shape == (sum(keep), 1)
        assert tensors[f"{prefix}.lora_A"].shape[0] == tensors[f"{prefix}.lora_B"].shape[1] == sum(keep)
    # The live model is not cut: training could go on.
    assert all(layer.r["default"] == 4 for layer in adalora_layers(model).values())


def test_loading_cuts_the_layers_to_the_kept_triplets_in_peftlab_and_in_peft(allocated):
    model, folder = allocated
    expected = output(model, "llama")
    pattern = model.peft_config["default"].rank_pattern
    loaded = peftlab.PeftModel.from_pretrained(build("llama"), folder)
    for module, layer in adalora_layers(loaded).items():
        assert layer.r["default"] == sum(pattern[f"{module}.lora_E"])
        assert layer.lora_A["default"].shape[0] == layer.r["default"] and layer.ranknum["default"].item() == 4
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(output(loaded, "llama"), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(output(loaded.merge_and_unload(), "llama"), expected, rtol=0, atol=1e-5)
    theirs = peft.PeftModel.from_pretrained(build("llama"), folder)
    torch.testing.assert_close(output(theirs, "llama"), expected, rtol=0, atol=1e-5)


def test_a_folder_peft_saved_after_its_allocation_loads_cut_in_peftlab(tmp_path):
    theirs = peft.get_peft_model(build("llama"), config(peft, total_step=6, tfinal=2))
    train(theirs, token_data(), collate, steps=6, lr=1e-2, batch_size=8, progress=False, device="cpu",
          on_step=theirs.base_model.update_and_allocate)
    expected = output(theirs.eval(), "llama")
    theirs.save_pretrained(tmp_path)
    ours = peftlab.PeftModel.from_pretrained(build("llama"), tmp_path)
    assert sum(layer.r["default"] for layer in adalora_layers(ours).values()) == 2 * 6
    torch.testing.assert_close(output(ours, "llama"), expected, rtol=0, atol=1e-5)


# --- errors that say what to do ---------------------------------------------------------------------
@pytest.mark.parametrize("options,message", [
    ({"total_step": None}, "total_step > 0"),
    ({"total_step": 10, "tinit": 6, "tfinal": 4}, "leave no steps"),
    ({"target_r": 5}, "target_r <= init_r"),
    ({"deltaT": 0}, "deltaT"),
    ({"beta1": 1.0}, "beta1 and beta2"),
    ({"orth_reg_weight": -1.0}, "orth_reg_weight"),
    ({"use_dora": True}, "DoRA"),
    ({"use_rslora": True}, "lora_alpha / init_r"),
    ({"init_lora_weights": "gaussian"}, "init_lora_weights"),
    ({"rank_pattern": {f"{Q_PROJ}.lora_E": [1, 0, 1, 1]}}, "list of booleans"),
])
def test_config_mistakes_are_refused_with_a_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        config(**options)


def test_r_is_not_used_and_setting_it_warns():
    with pytest.warns(UserWarning, match="init_r"):
        config(r=16)


def test_one_trainable_adapter_at_a_time_and_allocation_needs_gradients_and_a_trainable_adapter(tmp_path):
    model = get_peft_model(build("llama"), config())
    with pytest.raises(ValueError, match="one adapter at a time"):
        model.add_adapter("second", config())
    model.add_adapter("frozen", config(inference_mode=True))   # a second, frozen one is fine
    with pytest.raises(ValueError, match="no gradient"):
        model.base_model.update_and_allocate(1)
    model.save_pretrained(tmp_path)
    loaded = peftlab.PeftModel.from_pretrained(build("llama"), tmp_path)
    with pytest.raises(ValueError, match="No trainable AdaLoRA adapter"):
        loaded.base_model.update_and_allocate(1)


def test_a_rank_pattern_naming_a_module_without_the_adapter_is_refused_and_changes_nothing(allocated):
    _, folder = allocated
    path = folder / "adapter_config.json"
    saved = json.loads(path.read_text())
    saved["rank_pattern"]["model.layers.0.mlp.up_proj.lora_E"] = [True] * 4
    path.write_text(json.dumps(saved))
    base = build("llama")
    with pytest.raises(ValueError, match="up_proj"):
        peftlab.PeftModel.from_pretrained(base, folder)
    assert not any(isinstance(m, AdaLoraLayer) for m in base.modules())


def test_trainable_parameters_are_init_r_times_in_plus_out_plus_one_per_layer():
    model = get_peft_model(build("llama"), config(init_r=12, target_r=4))
    per_layer = {"q_proj": 12 * (32 + 32 + 1), "v_proj": 12 * (32 + 16 + 1), "down_proj": 12 * (64 + 32 + 1)}
    assert model.get_nb_trainable_parameters()[0] == 2 * sum(per_layer.values())
