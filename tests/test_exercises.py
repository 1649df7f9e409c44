"""Exercise checkers: 'not attempted' for the stubs, True for right answers, a hint for wrong ones.
(Notebooks 00 and 02: tests/test_exercises_nb00_nb02.py.)"""
import statistics

import pytest

from peftlab.course.exercises import nb01_full_finetuning as nb01
from peftlab.workbook import load_base_model


@pytest.fixture(scope="module")
def model():
    return load_base_model()[0]


def stub(*_):
    raise NotImplementedError


def test_memory_7b(capsys):
    assert not nb01.check_memory_7b(None)
    assert nb01.check_memory_7b(7e9 * 16 / 2**30)
    assert not nb01.check_memory_7b(7e9 * 16 / 1e9)
    assert "GiB" in capsys.readouterr().out.splitlines()[-1]
    assert not nb01.check_memory_7b(7e9 * 4 / 2**30)


def test_freeze_all_but_last_layer(model, capsys):
    assert not nb01.check_freeze_all_but_last_layer(stub, model)
    assert "not attempted" in capsys.readouterr().out

    def right(m):
        m.requires_grad_(False)
        m.model.layers[-1].requires_grad_(True)
        m.model.norm.requires_grad_(True)

    def forgot_norm(m):
        m.requires_grad_(False)
        m.model.layers[-1].requires_grad_(True)

    assert nb01.check_freeze_all_but_last_layer(right, model)
    assert not nb01.check_freeze_all_but_last_layer(forgot_norm, model)
    assert all(p.requires_grad for p in model.parameters()), "the checker must work on a copy"


def test_adam_state_bytes(model, capsys):
    assert not nb01.check_adam_state_bytes(stub, model)
    assert "not attempted" in capsys.readouterr().out
    everything = lambda opt: sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    moments = lambda opt: sum(t.numel() * t.element_size() for s in opt.state.values()
                              for k, t in s.items() if k != "step")
    assert nb01.check_adam_state_bytes(moments, model)
    assert not nb01.check_adam_state_bytes(everything, model)
    assert "step" in capsys.readouterr().out.splitlines()[-1]


def test_one_layer_against_all(capsys):
    from peftlab.workbook import load_base_model
    tokenizer = load_base_model()[1]

    def last_layer_and_norm(m):
        m.requires_grad_(False)
        m.model.layers[-1].requires_grad_(True)
        m.model.norm.requires_grad_(True)

    assert not nb01.check_one_layer_against_all(None, None, tokenizer)
    assert "not attempted" in capsys.readouterr().out
    run = nb01.one_layer_run(last_layer_and_norm)
    assert run["trainable"] == 246_144
    from peftlab.workbook.stats import compare
    row, full = nb01._stored_one_layer()
    assert run["test"] == row["test"][0], "the learner's seed 0 is the stored seed 0, exactly"
    verdict = compare(row["test"], full["test"])
    found = "ahead" if verdict.low > 0 else "behind" if verdict.high < 0 else "no detectable difference"
    assert nb01.check_one_layer_against_all(found, run, tokenizer)
    wrong = next(c for c in nb01.ONE_LAYER_CHOICES if c != found)
    assert not nb01.check_one_layer_against_all(wrong, run, tokenizer)
    assert f"{found!r}, not {wrong!r}" in capsys.readouterr().out.splitlines()[-1]
    assert not nb01.check_one_layer_against_all("maybe", run, tokenizer)
    assert "predict one of" in capsys.readouterr().out.splitlines()[-1]
    assert not nb01.check_one_layer_against_all(found, {**run, "test": 0.99}, tokenizer)
    assert "Fix freeze_all_but_last_layer" in capsys.readouterr().out.splitlines()[-1]


def test_nb03_checkers(model, capsys):
    import copy

    from peftlab import LoraConfig, get_peft_model
    from peftlab.course.exercises import nb03_lora_on_a_transformer as nb03
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                 init_lora_weights=False))
    n = peft_model.get_nb_trainable_parameters()[0]
    assert not nb03.check_adapter_weight_bytes(None, peft_model)
    assert nb03.check_adapter_weight_bytes(4 * n, peft_model)
    assert not nb03.check_adapter_weight_bytes(n, peft_model)

    assert not nb03.check_last_two_down_proj(None, model)
    assert nb03.check_last_two_down_proj(r"model\.layers\.[23]\.mlp\.down_proj", model)
    assert not nb03.check_last_two_down_proj(r".*down_proj", model)



def test_nb07_checkers_accept_right_answers_and_explain_wrong_ones(capsys):
    from peftlab.course.exercises import nb07_adapters_ia3_bitfit as nb07
    assert not nb07.check_houlsby_parameter_count(None)
    assert "not attempted" in capsys.readouterr().out
    assert nb07.check_houlsby_parameter_count(12 * 2 * (2 * 768 * 48 + 48 + 768))
    assert not nb07.check_houlsby_parameter_count(12 * (2 * 768 * 48 + 48 + 768))
    assert "Pfeiffer" in capsys.readouterr().out.splitlines()[-1]


    gpt2 = load_base_model("pico-gpt2-1m")[0]

    def train_only(model, kind):
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias") if kind == "bias" else (".ln_" in name or "ln_f" in name))
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert nb07.check_train_only(train_only, gpt2)
    assert "5,760" in capsys.readouterr().out
    assert not nb07.check_train_only(lambda m, k: train_only(m, "bias"), gpt2)
    assert "kind 'norm'" in capsys.readouterr().out


def test_nb11_checkers_accept_right_answers_and_explain_wrong_ones(capsys):
    from peftlab.course.exercises import nb11_qlora as nb11
    from peftlab.workbook.memory import LLAMA_SHAPES, llama_parameters
    n = llama_parameters(*LLAMA_SHAPES["7B"])
    assert not nb11.check_7b_nf4_gigabytes(None)
    assert nb11.check_7b_nf4_gigabytes(n * 4.127 / 8 / 1e9)
    assert not nb11.check_7b_nf4_gigabytes(n * 4.5 / 8 / 1e9)
    assert "double quantization" in capsys.readouterr().out.splitlines()[-1]


def test_nb11_the_65b_question_is_measured_again(capsys):
    from peftlab.course.exercises import nb11_qlora as nb11
    from peftlab.workbook.memory import finetuning_memory
    total = finetuning_memory(**nb11.FIT)["total"] / 2**30
    assert 47 < total < 48, "the question sits on the edge on purpose: it fits on paper, by under 1 GiB"
    assert not nb11.check_65b_at_2048(None, nb11.FIT, None)
    assert "not attempted" in capsys.readouterr().out
    assert nb11.check_65b_at_2048("fits", dict(nb11.FIT), total)
    assert "too thin to count on" in capsys.readouterr().out
    assert not nb11.check_65b_at_2048("does not fit", dict(nb11.FIT), total)
    assert "'fits', not 'does not fit'" in capsys.readouterr().out
    assert not nb11.check_65b_at_2048("fits", {**nb11.FIT, "seq": 512}, 44.8)
    assert "the question's settings" in capsys.readouterr().out
    assert not nb11.check_65b_at_2048("fits", dict(nb11.FIT), total * 2**30 / 1e9)   # GB, not GiB
    assert "in GiB" in capsys.readouterr().out
    assert not nb11.check_65b_at_2048("maybe", dict(nb11.FIT), total)
    assert "predict 'fits'" in capsys.readouterr().out


def test_nb11_the_new_seed_is_run_again_and_judged(capsys):
    from peftlab.course.exercises import nb11_qlora as nb11
    assert not nb11.check_qlora_on_a_new_seed(True, None)
    assert "not attempted" in capsys.readouterr().out
    assert not nb11.check_qlora_on_a_new_seed("yes", {"LoRA": 0.9, "QLoRA": 0.9})
    assert "predict True" in capsys.readouterr().out
    assert not nb11.check_qlora_on_a_new_seed(True, {"LoRA": 0.9})
    assert "measure both" in capsys.readouterr().out
    assert not nb11.check_qlora_on_a_new_seed(True, {"LoRA": 0.123, "QLoRA": 0.456})   # typed in, not run
    assert "run again here" in capsys.readouterr().out
    truth = nb11.new_seed_scores()
    close = abs(truth["LoRA"] - truth["QLoRA"]) <= nb11.CLOSE + 1e-9
    assert nb11.check_qlora_on_a_new_seed(close, truth)
    assert "Over the stored seeds 0-4" in capsys.readouterr().out


def test_nb05_checkers_accept_right_answers_and_explain_wrong_ones(capsys):
    from peftlab.course.exercises import nb05_lora_variants as nb05
    assert not nb05.check_vera_parameters(None)
    assert "not attempted" in capsys.readouterr().out
    assert nb05.check_vera_parameters(4 * ((1024 + 128) + (1024 + 64)))
    assert not nb05.check_vera_parameters(4 * 2 * 1024)
    assert "per *output*" in capsys.readouterr().out.split("\n")[-2]

    import torch

    from peftlab import LoKrConfig, get_peft_model
    torch.manual_seed(0)
    lokr = get_peft_model(torch.nn.Sequential(torch.nn.Linear(128, 128)),
                          LoKrConfig(r=8, decompose_factor=8, target_modules=["0"], init_weights=False))
    layer = lokr.base_model.model[0]
    assert int(torch.linalg.matrix_rank(layer.get_delta_weight("default").detach())) == 128
    assert lokr.get_nb_trainable_parameters()[0] == nb05.FULL_RANK["LoKr"] == 320, "the answer is measured"
    assert nb05.check_full_rank_budget("LoKr", 320)
    assert not nb05.check_full_rank_budget("LoHa", 6144)
    assert "look at LoKr" in capsys.readouterr().out.split("\n")[-2]
    assert not nb05.check_full_rank_budget("LoKr", 272)
    assert not nb05.check_full_rank_budget("LoRA", 32768)
    assert not nb05.check_full_rank_budget("VeRA", 1)
    assert "choose one of" in capsys.readouterr().out.split("\n")[-2]
    assert not nb05.check_full_rank_budget("LoKr", None)
    assert "not attempted" in capsys.readouterr().out.split("\n")[-2]


def test_nb06_checkers_accept_right_answers_and_explain_wrong_ones(capsys):
    import torch

    from peftlab.course.exercises import nb06_adalora as nb06
    assert not nb06.check_adalora_parameter_count(None)
    assert "not attempted" in capsys.readouterr().out
    assert nb06.check_adalora_parameter_count(4 * (12 * (128 + 128 + 1) + 12 * (128 + 64 + 1)))
    assert not nb06.check_adalora_parameter_count(4 * 12 * (256 + 192))
    assert "λ" in capsys.readouterr().out.splitlines()[-1]
    assert not nb06.check_adalora_parameter_count(4 * (4 * 257 + 4 * 193))
    assert "init_r" in capsys.readouterr().out.splitlines()[-1]


    def mask(scores, budget, sign=1):
        threshold = (sign * torch.cat(list(scores.values()))).sort(descending=True).values[budget - 1]
        return {k: (sign * v >= threshold).tolist() for k, v in scores.items()}

    def per_layer(scores, budget):
        share = budget // len(scores)
        return {k: [i in v.argsort(descending=True)[:share].tolist() for i in range(len(v))] for k, v in scores.items()}
    assert not nb06.check_mask_to_budget(stub)
    assert "not attempted" in capsys.readouterr().out
    assert nb06.check_mask_to_budget(mask)
    assert not nb06.check_mask_to_budget(lambda s, b: mask(s, b, sign=-1))
    assert "highest" in capsys.readouterr().out.splitlines()[-1]
    assert not nb06.check_mask_to_budget(per_layer)
    assert "evenly" in capsys.readouterr().out.splitlines()[-1]
    assert not nb06.check_mask_to_budget(lambda s, b: mask(s, b - 1))
    assert "triplets kept" in capsys.readouterr().out.splitlines()[-1]


def test_nb13_checkers(capsys):

    from peftlab.course.exercises import nb13_many_adapters as nb13

    assert not nb13.check_cat_size(None, None)
    assert "not attempted" in capsys.readouterr().out
    assert nb13.check_cat_size(8, 4 * 8 * (256 + 192))
    assert not nb13.check_cat_size(4, 4 * 4 * (256 + 192))
    assert "ranks add" in capsys.readouterr().out.splitlines()[-1]
    assert not nb13.check_cat_size(8, 4 * 8 * 2 * 256)
    assert "64 outputs" in capsys.readouterr().out.splitlines()[-1]
    assert not nb13.check_cat_size(8, 4 * 4 * (256 + 192))
    assert "one r=4 adapter" in capsys.readouterr().out.splitlines()[-1]

    def mixed(x, W, adapters, names):
        out = x @ W.T
        for name, (A, B, s) in adapters.items():
            rows = [i for i, n in enumerate(names) if n == name]
            out[rows] = out[rows] + s * (x[rows] @ A.T @ B.T)
        return out

    def per_row(x, W, adapters, names):
        out = x @ W.T
        for i, n in enumerate(names):
            A, B, s = adapters[n]                 # KeyError on "__base__"
            out[i] += s * x[i] @ A.T @ B.T
        return out
    assert not nb13.check_mixed_lora(stub)
    assert "not attempted" in capsys.readouterr().out
    assert nb13.check_mixed_lora(mixed)
    assert not nb13.check_mixed_lora(lambda x, W, a, n: mixed(x, W, {k: (A, B, 1.0) for k, (A, B, _) in a.items()}, n))
    assert "scaling" in capsys.readouterr().out.splitlines()[-1]
    assert not nb13.check_mixed_lora(lambda x, W, a, n: mixed(x, W, a, [n[0]] * len(n)))
    assert "first row" in capsys.readouterr().out.splitlines()[-1]
    assert not nb13.check_mixed_lora(per_row)
    assert "__base__" in capsys.readouterr().out.splitlines()[-1]
    assert not nb13.check_mixed_lora(lambda x, W, a, n: x @ W.T)
    assert not nb13.check_mixed_lora(lambda x, W, a, n: (x @ W.T)[:, 0])
    assert "shape" in capsys.readouterr().out.splitlines()[-1]


def test_nb13_half_merge_is_measured_again(capsys):
    from peftlab import LoraConfig, get_peft_model
    from peftlab.course.exercises import nb13_many_adapters as nb13
    from peftlab.workbook import load_base_model, load_task
    base, tokenizer = load_base_model()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config, adapter_name="sentiment")
    model.add_adapter("capitals", config)
    rows = list(load_task("capitals")["test"])[:4]
    assert not nb13.check_half_merge(None, None, model, tokenizer, rows, 0.3)
    assert "not attempted" in capsys.readouterr().out
    truth = nb13.half_merge_capitals(model, tokenizer, rows)
    assert list(model.peft_config) == ["sentiment", "capitals"], "the checker's merge is deleted again"
    assert nb13.check_half_merge(truth > 0.3, truth, model, tokenizer, rows, 0.3)
    assert not nb13.check_half_merge(not truth > 0.3, truth, model, tokenizer, rows, 0.3)
    assert "task arithmetic chooses its weight on validation" in capsys.readouterr().out
    assert not nb13.check_half_merge(True, min(1.0, truth + 0.25), model, tokenizer, rows, 0.3)
    assert "measured again here" in capsys.readouterr().out
    assert not nb13.check_half_merge("yes", truth, model, tokenizer, rows, 0.3)
    assert "predict True" in capsys.readouterr().out


def test_nb12_checkers(capsys):
    from peftlab.course.exercises import nb12_unified_view as nb12
    from peftlab.course.experiments.protocol import load_results
    from peftlab.workbook.stats import compare
    results = load_results("unified")

    assert not nb12.check_forms({name: None for name in nb12.FORMS})
    assert "not attempted" in capsys.readouterr().out
    assert nb12.check_forms(dict(nb12.FORMS))
    assert not nb12.check_forms({**nb12.FORMS, "LayerNorm tuning": "shift"})
    assert "RMSNorm" in capsys.readouterr().out

    right = nb12.expected_choices(results)
    llama = {n: r for n, r in results["rows"].items() if r["base_model"] == "pico-llama-1m"}
    assert len(right["serve"]) == 1 and llama[right["serve"][0]]["test_mean"] >= 0.95
    for scenario in ("memory", "knowledge"):   # a tie is a real tie: the group's leader does not beat its members
        leader, *others = right[scenario]
        assert all(compare(llama[leader]["test"], llama[n]["test"]).low <= 0 for n in others)
    picks = {scenario: names[-1] for scenario, names in right.items()}
    assert nb12.check_choices(picks, results)
    weak = next(n for n, r in llama.items() if r["test_mean"] < 0.95)
    assert not nb12.check_choices({**picks, "serve": weak}, results)
    assert "under 0.95" in capsys.readouterr().out
    forgetful = next(n for n, r in llama.items() if statistics.mean(r["heldout_perplexity"]) >= 3)
    assert not nb12.check_choices({**picks, "knowledge": forgetful}, results)
    assert "perplexity" in capsys.readouterr().out
    assert not nb12.check_choices({**picks, "memory": "LoRA"}, results)
    assert "not a row" in capsys.readouterr().out

    reference = {"trainable": 2560, "test": 1.0, "measured": {"heldout_perplexity": 4.2}}
    worse = {"trainable": 2560, "test": 0.96, "measured": {"heldout_perplexity": 180.0}}
    assert not nb12.check_ia3_prediction(None, None, reference)
    assert nb12.check_ia3_prediction("more", worse, reference)
    assert not nb12.check_ia3_prediction("less", worse, reference)
    assert "'more', not 'less'" in capsys.readouterr().out.splitlines()[-1]
    assert not nb12.check_ia3_prediction("more", reference, reference)
    assert "0.3" in capsys.readouterr().out.splitlines()[-1]
    assert not nb12.check_ia3_prediction("more", {"test": 1.0}, reference)



def test_the_energy_prediction_is_judged_on_the_recounted_spectrum(capsys):
    import torch

    from peftlab.course.exercises import nb04_inside_lora as nb04
    values = torch.cat([torch.tensor([10.0, 5.0]), torch.full((30,), 0.5)])   # a long tail
    truth = nb04._rank_for_energy(values, 0.99)
    assert 17 <= truth <= 64
    assert not nb04.check_energy_prediction(None, truth, values)
    assert "not attempted" in capsys.readouterr().out
    assert not nb04.check_energy_prediction("17-64", truth - 1, values)          # a measurement that is not the run's
    assert "need" in capsys.readouterr().out
    assert not nb04.check_energy_prediction("1-4", truth, values)               # wrong prediction, real measurement
    assert "not '1-4'" in capsys.readouterr().out
    assert nb04.check_energy_prediction("17-64", truth, values)
    assert "as you predicted" in capsys.readouterr().out
    assert not nb04.check_energy_prediction("about 20", truth, values)


def test_the_operation_count_prediction_is_judged_on_a_recount(capsys):
    from peftlab.course.exercises import nb07_adapters_ia3_bitfit as nb07
    from peftlab.workbook import load_base_model
    gpt2, _ = load_base_model("pico-gpt2-1m")
    gpt2.requires_grad_(False)
    truth = nb07.extra_operations(gpt2)
    assert truth == 2 * 4 * (truth // 8) > 0, "the same count for each of the 8 adapted layers"
    assert not nb07.check_lora_operations(None, truth, gpt2)
    assert "not attempted" in capsys.readouterr().out
    assert not nb07.check_lora_operations(truth, truth + 1, gpt2)      # a measurement that is not the count
    assert "counting gives" in capsys.readouterr().out
    assert not nb07.check_lora_operations(truth - 1, truth, gpt2)
    assert "not" in capsys.readouterr().out
    assert nb07.check_lora_operations(truth, truth, gpt2)
    assert "as you predicted" in capsys.readouterr().out


def test_nb03_forgetting_prediction_is_checked_against_the_stored_seed():
    from peftlab.course.exercises import nb03_lora_on_a_transformer as nb03
    from peftlab.course.experiments.protocol import load_results
    from peftlab.workbook.stats import compare
    stored = load_results("nb03_forgetting")
    rows = {m: stored["rows"][n] for m, n in nb03.matched_accuracy_rows().items()}
    verdict = compare(rows["LoRA r=4"]["ranked recall"], rows["full fine-tuning"]["ranked recall"])
    found = "LoRA" if verdict.low > 0 else "full fine-tuning" if verdict.high < 0 else "no detectable difference"
    measured = nb03.forgetting_run(0)
    assert all(measured[m]["ranked recall"] == rows[m]["ranked recall"][0] for m in rows), "seed 0, exactly"
    assert nb03.check_forgetting_prediction(found, measured)
    wrong = next(c for c in nb03.FORGETTING_CHOICES if c != found)
    assert not nb03.check_forgetting_prediction(wrong, measured)
    typed = {m: {**run, "ranked recall": 0.5} for m, run in measured.items()}
    assert not nb03.check_forgetting_prediction(found, typed)
    assert not nb03.check_forgetting_prediction("LoRA forgets less", measured)
    assert not nb03.check_forgetting_prediction(None, None)
