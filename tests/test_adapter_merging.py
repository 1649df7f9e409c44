"""Combining LoRA adapters (add_weighted_adapter) against peft, and the merge maths (peftlab/merging.py)
by its invariants: what TIES, DARE and magnitude pruning promise, checked without an oracle."""
import functools

import peft
import pytest
import torch
from lora_testutils import build, inputs, one_thread, perturb  # noqa: F401 (autouse fixture)
from peft.utils import merge_utils

import peftlab
from peftlab import merging
from peftlab.tuners import BaseTunerLayer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*")
# Llama: nn.Linear and an nn.Embedding (its A is looked up); GPT-2: Conv1D, which stores W as (in, out).
TARGETS = {"llama": ["q_proj", "v_proj", "embed_tokens"], "gpt2": ["c_attn", "c_proj"]}
WEIGHTS = {"ab": (["a", "b"], [0.7, -0.4]), "abc": (["a", "b", "c"], [1.0, 0.5, 0.3])}
DETERMINISTIC = ["linear", "cat", "svd", "ties", "ties_svd", "magnitude_prune", "magnitude_prune_svd"]
DARE = ["dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd"]
ELECTS_SIGNS = ("ties", "ties_svd", "dare_ties", "dare_ties_svd")


def options(kind, majority_sign_method="total", density=0.5):
    if kind in ("linear", "cat", "svd"):
        return {}
    opts = {"density": density}
    return {**opts, "majority_sign_method": majority_sign_method} if kind in ELECTS_SIGNS else opts


def ours_with_adapters(arch, targets=None, **extra):
    """Three trained-looking LoRA adapters of rank 4 with different alphas; "c" on fewer layers."""
    targets = targets or TARGETS[arch]
    model = peftlab.get_peft_model(build(arch), peftlab.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                                   **extra), "a")
    model.add_adapter("b", peftlab.LoraConfig(r=4, lora_alpha=4, target_modules=targets, **extra))
    model.add_adapter("c", peftlab.LoraConfig(r=4, lora_alpha=16, target_modules=targets[:1], **extra))
    for seed, name in enumerate("abc"):
        model.set_adapter(name)
        perturb(model, seed=10 + seed)
    model.set_adapter("a")
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """pair(arch, targets): the same three adapters in peftlab and in peft (through peftlab's
    folders), built once per module; each test adds adapters under names of its own."""
    @functools.cache
    def make(arch, targets=None):
        ours = ours_with_adapters(arch, list(targets) if targets else None)
        folder = tmp_path_factory.mktemp("adapters")
        ours.save_pretrained(folder)
        theirs = peft.PeftModel.from_pretrained(build(arch), folder / "a", adapter_name="a")
        for name in "bc":
            theirs.load_adapter(folder / name, adapter_name=name)
        return ours, theirs
    return make


def our_deltas(model, name) -> dict:
    return {n: m.get_delta_weight(name) for n, m in model.named_modules()
            if isinstance(m, BaseTunerLayer) and name in m}


def peft_deltas(model, name) -> dict:
    """s B A as (out, in), read from peft's factors (its get_delta_weight transposes some layers)."""
    out = {}
    for n, m in model.named_modules():
        for a, b in (("lora_A", "lora_B"), ("lora_embedding_A", "lora_embedding_B")):
            factors = getattr(m, a, None)
            if factors is not None and name in factors:
                A, B = getattr(m, a)[name], getattr(m, b)[name]
                A, B = getattr(A, "weight", A), getattr(B, "weight", B)
                out[n] = m.scaling[name] * (B @ A)
    return out


def max_difference(ours, theirs, name) -> float:
    mine, peft_side = our_deltas(ours, name), peft_deltas(theirs, name)
    assert mine.keys() == peft_side.keys()
    return max((mine[k] - peft_side[k]).abs().max().item() for k in mine)


def logits(model, arch, name):
    model.set_adapter(name)
    with torch.no_grad():
        return model(**inputs(arch)).logits


def combine_both(ours, theirs, name, adapters, weights, kind, seed=0, **kw):
    for model in (ours, theirs):
        torch.manual_seed(seed)
        model.add_weighted_adapter(adapters, weights, name, combination_type=kind, **kw)


# --- against peft ---------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["ab", "abc"])
@pytest.mark.parametrize("kind,sign", [(k, "total") for k in DETERMINISTIC]
                         + [(k, "frequency") for k in ("ties", "ties_svd")])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_every_deterministic_combination_matches_peft(pair, arch, kind, sign, which):
    """Same ΔW in every layer, same logits, same config. For the SVD types only the product B A is
    compared: singular vectors are defined up to sign."""
    ours, theirs = pair(arch)
    adapters, weights = WEIGHTS[which]
    name = f"{kind}_{sign}_{which}"
    combine_both(ours, theirs, name, adapters, weights, kind, **options(kind, sign))
    assert max_difference(ours, theirs, name) < 1e-5
    torch.testing.assert_close(logits(ours, arch, name), logits(theirs, arch, name), rtol=0, atol=1e-5)
    mine, peft_config = ours.peft_config[name], theirs.peft_config[name]
    assert (mine.r, mine.lora_alpha) == (peft_config.r, peft_config.lora_alpha)
    assert sorted(mine.target_modules) == sorted(peft_config.target_modules)
    if kind not in ("svd", "ties_svd", "magnitude_prune_svd"):   # deterministic factors: the same numbers
        for layer_name, layer in ours.named_modules():
            if isinstance(layer, BaseTunerLayer) and name in layer:
                theirs_layer = theirs.get_submodule(layer_name)
                A = theirs_layer.lora_A[name].weight if name in theirs_layer.lora_A \
                    else theirs_layer.lora_embedding_A[name]
                torch.testing.assert_close(layer.A(name), A, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_svd_rank_and_clamp_match_peft(pair, arch):
    ours, theirs = pair(arch)
    for name, kw in (("low", {"svd_rank": 2}), ("clamped", {"svd_rank": 3, "svd_clamp": 0.9}),
                     ("reduced", {"svd_full_matrices": False})):
        combine_both(ours, theirs, name, ["a", "b"], [0.7, -0.4], "svd", **kw)
        assert max_difference(ours, theirs, name) < 1e-5, name
        assert ours.peft_config[name].r == theirs.peft_config[name].r


@pytest.mark.parametrize("kind", DARE)
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_dare_with_the_same_seed_draws_the_same_masks_as_peft(pair, arch, kind):
    """DARE is random; seeded, it draws its masks in peft's order and layout (also for GPT-2's
    transposed Conv1D), so the results are equal. Linear layers only: peft's embedding init draws
    random numbers that peftlab's does not, so there the seeds diverge."""
    ours, theirs = pair(arch, tuple(t for t in TARGETS[arch] if t != "embed_tokens"))
    for sign in ("total", "frequency") if kind in ELECTS_SIGNS else ("total",):
        name = f"{kind}_{sign}"
        combine_both(ours, theirs, name, ["a", "b", "c"], [1.0, 0.5, 0.3], kind, seed=3, **options(kind, sign))
        assert max_difference(ours, theirs, name) < 1e-5


def test_a_combined_adapter_saves_and_loads_in_peft_like_any_lora_adapter(pair, tmp_path):
    ours, theirs = pair("llama")
    combine_both(ours, theirs, "saved", ["a", "b", "c"], [1.0, 0.5, 0.3], "ties_svd", density=0.7)
    ours.save_pretrained(tmp_path, selected_adapters=["saved"])
    loaded = peft.PeftModel.from_pretrained(build("llama"), tmp_path / "saved", adapter_name="saved")
    reloaded = peftlab.PeftModel.from_pretrained(build("llama"), tmp_path / "saved")
    expected = logits(theirs, "llama", "saved")
    torch.testing.assert_close(logits(loaded, "llama", "saved"), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits(reloaded, "llama", "default"), expected, rtol=0, atol=1e-5)


def test_merge_functions_equal_peft_merge_utils_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(6, 5, generator=g) for _ in range(3)]
    weights = torch.tensor([0.8, -0.3, 0.5])
    for fn, kw in (("task_arithmetic", {}), ("magnitude_prune", {"density": 0.4}),
                   ("ties", {"density": 0.6, "majority_sign_method": "total"}),
                   ("ties", {"density": 0.6, "majority_sign_method": "frequency"}),
                   ("dare_linear", {"density": 0.5}), ("dare_ties", {"density": 0.5})):
        results = []
        for module in (merging, merge_utils):
            torch.manual_seed(1)
            results.append(getattr(module, fn)(tensors, weights, **kw))
        torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6, msg=f"{fn} {kw}")


# --- what the combinations promise -------------------------------------------------------------

def exact_sum(model, adapters, weights) -> dict:
    """Σ w_i ΔW_i, layer by layer: what task arithmetic asks of the combined adapter."""
    total = {}
    for name, w in zip(adapters, weights):
        for layer, delta in our_deltas(model, name).items():
            total[layer] = total.get(layer, 0) + w * delta
    return total


@pytest.mark.parametrize("kind,kw", [("cat", {}), ("svd", {"svd_rank": 12})])
def test_cat_and_full_rank_svd_give_exactly_the_weighted_sum(kind, kw):
    model = ours_with_adapters("gpt2")
    model.add_weighted_adapter(["a", "b", "c"], [1.0, -0.5, 0.3], "sum", combination_type=kind, **kw)
    expected, got = exact_sum(model, ["a", "b", "c"], [1.0, -0.5, 0.3]), our_deltas(model, "sum")
    assert expected.keys() == got.keys()
    for layer in got:
        torch.testing.assert_close(got[layer], expected[layer], rtol=0, atol=1e-5)
    assert model.peft_config["sum"].r == 12 and model.active_adapter == "a"   # added, not activated
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".sum." in n)


def test_one_adapter_is_combined_linearly_and_exactly():
    model = ours_with_adapters("llama")
    model.add_weighted_adapter(["b"], [-2.0], "minus_b", combination_type="svd", svd_rank=1)
    assert model.peft_config["minus_b"].r == 4          # "linear": svd_rank does not apply
    for layer, delta in our_deltas(model, "b").items():
        torch.testing.assert_close(our_deltas(model, "minus_b")[layer], -2.0 * delta, rtol=0, atol=1e-6)


def test_rslora_inputs_still_give_the_weighted_sum():
    """peft copies use_rslora into the new config, which rescales its result by sqrt(r);
    peftlab gives the new adapter use_rslora=False, so its scale is 1 as the factors assume."""
    model = ours_with_adapters("gpt2", use_rslora=True)
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "sum", combination_type="cat")
    assert model.peft_config["sum"].use_rslora is False
    expected = exact_sum(model, ["a", "b"], [1.0, 1.0])
    for layer, delta in our_deltas(model, "sum").items():
        torch.testing.assert_close(delta, expected[layer], rtol=0, atol=1e-5)


def test_a_layer_of_lower_rank_is_zero_padded_to_the_stated_rank():
    model = ours_with_adapters("llama", rank_pattern={"v_proj": 2})
    model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "sum", combination_type="cat")
    v_proj = model.base_model.model.model.layers[0].self_attn.v_proj
    assert v_proj.A("sum").shape[0] == 8 and torch.all(v_proj.A("sum")[4:] == 0)
    expected = exact_sum(model, ["a", "b"], [0.5, 0.5])
    for layer, delta in our_deltas(model, "sum").items():
        torch.testing.assert_close(delta, expected[layer], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dare,plain", [("dare_linear", "linear"), ("dare_ties", "ties"),
                                        ("dare_linear_svd", "svd"), ("dare_ties_svd", "ties_svd")])
def test_dare_with_density_1_is_the_unpruned_combination(dare, plain):
    model = ours_with_adapters("gpt2")
    for kind, name in ((dare, "dare"), (plain, "plain")):
        model.add_weighted_adapter(["a", "b"], [0.6, 0.4], name, combination_type=kind, **options(kind, density=1.0))
    for layer, delta in our_deltas(model, "dare").items():
        torch.testing.assert_close(delta, our_deltas(model, "plain")[layer], rtol=0, atol=1e-6)


def test_dare_keeps_about_density_of_the_entries_rescaled_by_1_over_density():
    """With weights (1, 0) the combined A is adapter a's A * sqrt(s), dropped and rescaled."""
    model = ours_with_adapters("llama", targets=["q_proj", "v_proj"])
    torch.manual_seed(0)
    model.add_weighted_adapter(["a", "b"], [1.0, 0.0], "dare", combination_type="dare_linear", density=0.3)
    kept_total = entries = 0
    for layer in model.base_model.model.modules():
        if isinstance(layer, BaseTunerLayer):
            full = layer.A("a") * layer.scaling["a"] ** 0.5
            got, kept = layer.A("dare"), layer.A("dare") != 0
            torch.testing.assert_close(got[kept], full[kept] / 0.3, rtol=1e-6, atol=0)
            kept_total, entries = kept_total + kept.sum().item(), entries + kept.numel()
    assert abs(kept_total / entries - 0.3) < 0.03    # 2 * 4 * 32 * 2 = 512 entries: 3 standard deviations


def test_dare_kept_fraction_and_expected_value():
    g = torch.Generator().manual_seed(0)
    tensor = torch.randn(200, 500, generator=g)
    torch.manual_seed(0)
    dropped = merging.random_pruning(tensor, 0.2, rescale=True)
    kept = dropped != 0
    assert abs(kept.float().mean().item() - 0.2) < 0.005
    torch.testing.assert_close(dropped[kept], tensor[kept] / 0.2)
    # Over many draws, DARE's merge approaches the unpruned weighted sum (its expected value).
    tensors, weights = [torch.randn(4, 3, generator=g) for _ in range(2)], [0.7, -1.2]
    mean = torch.stack([merging.dare_linear(tensors, weights, 0.5) for _ in range(4000)]).mean(dim=0)
    torch.testing.assert_close(mean, merging.task_arithmetic(tensors, weights), rtol=0, atol=0.1)


@pytest.mark.parametrize("density", [0.1, 0.25, 0.5, 0.9])
def test_magnitude_pruning_keeps_exactly_the_largest_density_fraction(density):
    tensor = torch.randn(37, 11, generator=torch.Generator().manual_seed(0))
    pruned = merging.prune(tensor, density, "magnitude")
    kept = pruned != 0
    assert kept.sum().item() == int(density * tensor.numel())
    assert torch.equal(pruned[kept], tensor[kept])
    assert tensor[kept].abs().min() > tensor[~kept].abs().max()


def test_magnitude_prune_adapter_keeps_density_of_each_factor():
    model = ours_with_adapters("gpt2")
    model.add_weighted_adapter(["a", "b"], [1.0, 0.0], "pruned", combination_type="magnitude_prune", density=0.25)
    for layer in model.base_model.model.modules():
        if isinstance(layer, BaseTunerLayer):
            for factor in (layer.A("pruned"), layer.B("pruned")):
                assert (factor != 0).sum().item() == int(0.25 * factor.numel())


def test_ties_elects_signs_by_mass_or_by_votes_and_averages_the_agreeing_entries():
    t1, t2, t3 = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([-3.0, 1.0, 1.0]), torch.tensor([-0.5, 0.5, 0.0])
    stacked = torch.stack([t1, t2, t3])
    # mass: sums (-2.5, -0.5, 4) elect (-, -, +); votes: (-1, +1, +2) elect (-, +, +)
    assert merging.calculate_majority_sign_mask(stacked, "total").tolist() == [
        [False, True, True], [True, False, True], [True, False, False]]
    ones = [1.0, 1.0, 1.0]
    assert merging.ties([t1, t2, t3], ones, 1.0, "total").tolist() == [-1.75, -2.0, 2.0]
    assert merging.ties([t1, t2, t3], ones, 1.0, "frequency").tolist() == [-1.75, 0.75, 2.0]


# --- refusals ------------------------------------------------------------------------------------

def refusal(model, match, *args, **kw):
    before = set(model.peft_config)
    with pytest.raises(ValueError, match=match):
        model.add_weighted_adapter(*args, **kw)
    assert set(model.peft_config) == before            # nothing was added
    assert not any(".new." in n for n, _ in model.named_parameters())


def test_clear_errors_for_what_cannot_be_combined():
    model = ours_with_adapters("gpt2")
    refusal(model, r"Unknown adapter names \['x'\]; this model has: a, b, c", ["a", "x"], [1, 1], "new")
    refusal(model, "taken", ["a", "b"], [1, 1], "c")
    refusal(model, "one weight per adapter", ["a", "b"], [1], "new")
    refusal(model, "Invalid combination_type 'mean'.*svd", ["a", "b"], [1, 1], "new", combination_type="mean")
    for kind in ("ties", "dare_linear", "dare_ties_svd", "magnitude_prune"):
        refusal(model, "give density", ["a", "b"], [1, 1], "new", combination_type=kind)
    refusal(model, r"density .* in \(0, 1\]", ["a", "b"], [1, 1], "new", combination_type="ties", density=1.5)
    refusal(model, "majority_sign_method", ["a", "b"], [1, 1], "new", combination_type="ties", density=0.5,
            majority_sign_method="mean")
    model.add_adapter("r8", peftlab.LoraConfig(r=8, target_modules=["c_attn"]))
    refusal(model, "same rank.*'cat' or 'svd'", ["a", "r8"], [1, 1], "new", combination_type="linear")
    model.add_adapter("regex", peftlab.LoraConfig(r=4, target_modules=r".*c_attn"))
    refusal(model, "mix lists of names and regular expressions", ["a", "regex"], [1, 1], "new")


def test_dora_adapters_are_refused():
    model = peftlab.get_peft_model(build("llama"), peftlab.LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    model.add_adapter("plain", peftlab.LoraConfig(r=4, target_modules=["q_proj"]))
    refusal(model, r"DoRA adapters \['default'\].*magnitude", ["default", "plain"], [1, 1], "new")


def test_adapters_with_their_own_copies_of_a_module_are_refused():
    config = {"r": 4, "target_modules": ["query"], "task_type": "SEQ_CLS"}   # each adapter copies the classifier
    model = peftlab.get_peft_model(build("bert"), peftlab.LoraConfig(**config), "a")
    model.add_adapter("b", peftlab.LoraConfig(**config))
    refusal(model, r"own copy of \['classifier'\].*modules_to_save", ["a", "b"], [1, 1], "new")


def test_a_combined_adapter_that_would_miss_layers_is_refused_and_removed():
    """The new adapter takes the first adapter's layers_to_transform (as in peft), so it cannot
    reach adapters on other layers; peftlab says so instead of dropping them."""
    model = peftlab.get_peft_model(build("llama"), peftlab.LoraConfig(r=4, target_modules=["q_proj"],
                                                                      layers_to_transform=[0]), "a")
    model.add_adapter("b", peftlab.LoraConfig(r=4, target_modules=["q_proj"], layers_to_transform=[1]))
    refusal(model, "miss model.layers.1.self_attn.q_proj", ["a", "b"], [1, 1], "new", combination_type="cat")


def test_methods_without_adapter_combination_say_so():
    model = peftlab.get_peft_model(build("gpt2"), peftlab.IA3Config(target_modules=["c_attn"],
                                                                    feedforward_modules=[]))
    with pytest.raises(ValueError, match="IA3Model adapters cannot be combined.*LoRA"):
        model.add_weighted_adapter(["default"], [1.0], "new")


def test_all_linear_adapters_combine_into_an_all_linear_adapter():
    model = peftlab.get_peft_model(build("llama"), peftlab.LoraConfig(r=2, target_modules="all-linear"), "a")
    model.add_adapter("b", peftlab.LoraConfig(r=2, target_modules="all-linear"))
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "both", combination_type="cat")
    assert model.peft_config["both"].target_modules == "all-linear"
    assert our_deltas(model, "both").keys() == our_deltas(model, "a").keys()
