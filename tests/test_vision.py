"""Images: the digit tasks (no image or class shared), the bundled vision model (loads like a hub model,
meets its card), the three transfer methods (what trains, what is untouched), the stored results."""
import json

import pytest
import torch
from datasets import DatasetDict
from lora_testutils import one_thread  # noqa: F401 (autouse fixture)
from safetensors import safe_open
from transformers import AutoModelForImageClassification, ViTForImageClassification

from peftlab.course.experiments import nb15_images, protocol
from peftlab.course.experiments.protocol import load_results
from peftlab.course.experiments.transfer import new_head, run_transfer, transfer_model
from peftlab.workbook.data.images import IMAGE_TASKS, digits, load_images, split_indices
from peftlab.workbook.vision import (
    MODELS_DIR,
    VISION_MODEL,
    attention_from_cls,
    cls_features,
    head_accuracy,
    image_accuracy,
    load_vision_model,
    pixel_values,
)

SIZES = {"digits_0_4": {"train": 541, "validation": 180, "test": 180},
         "digits_5_9": {"train": 537, "validation": 179, "test": 180}}


@pytest.fixture(scope="module")
def base():
    return load_vision_model()


@pytest.fixture(scope="module")
def tasks():
    return {name: load_images(name) for name in IMAGE_TASKS}


def card() -> dict:
    return json.loads((MODELS_DIR / VISION_MODEL / "training.json").read_text())


def test_the_tasks_are_dataset_dicts_of_the_expected_size_and_labels(tasks):
    for name, task in tasks.items():
        assert isinstance(task, DatasetDict) and {s: len(t) for s, t in task.items()} == SIZES[name]
        for split in task.values():
            assert sorted(set(split["digit"])) == list(IMAGE_TASKS[name])
            assert all(label == digit - IMAGE_TASKS[name][0] for label, digit in zip(split["label"], split["digit"]))
        pixels = torch.tensor(task["test"]["pixels"])
        assert pixels.shape[1:] == (8, 8) and pixels.min() == 0 and pixels.max() == 16


def test_no_image_is_in_two_splits_or_two_tasks_and_the_split_is_seeded():
    _, targets = digits()
    every = [i for classes in IMAGE_TASKS.values() for ids in split_indices(targets, classes).values() for i in ids]
    assert len(every) == len(set(every)) == len(targets) == 1797
    assert split_indices(targets, (5, 6)) == split_indices(targets, (5, 6))
    assert split_indices(targets, (5, 6)) != split_indices(targets, (5, 6), seed=1)


def test_unknown_image_task_lists_the_available_ones():
    with pytest.raises(ValueError, match="digits_0_4, digits_5_9"):
        load_images("digits")


def test_pixels_are_read_in_minus_one_to_one(tasks):
    x = pixel_values(tasks["digits_0_4"]["test"])
    assert x.shape == (180, 1, 8, 8) and x.min() == -1 and x.max() == 1


def test_the_bundled_vision_model_loads_like_a_hub_model_in_float16_storage():
    path = MODELS_DIR / VISION_MODEL
    model = AutoModelForImageClassification.from_pretrained(path, dtype=torch.float32)   # default: as stored
    assert isinstance(model, ViTForImageClassification) and model.config.id2label == {i: str(i) for i in range(5)}
    with safe_open(path / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    assert all(p.dtype == torch.float32 and torch.equal(p, p.half().float()) for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == card()["parameters"]


def test_the_model_card_figures_are_what_the_model_scores(base, tasks):
    facts, text = card(), (MODELS_DIR / VISION_MODEL / "README.md").read_text()
    assert facts["test_accuracy"] == round(image_accuracy(base, tasks["digits_0_4"]["test"]), 4) >= 0.95
    assert facts["validation_accuracy"] == round(image_accuracy(base, tasks["digits_0_4"]["validation"]), 4)
    assert f"test {facts['test_accuracy']:.1%}" in text and f"{facts['parameters']:,}" in text
    assert facts["weights_bytes"] == (MODELS_DIR / VISION_MODEL / "model.safetensors").stat().st_size


# The head: 64 * 5 + 5. LoRA r=4 on q and v (64 -> 64) in 4 layers: 8 * 4 * (64 + 64) more.
@pytest.mark.parametrize("method,trainable", [("probe", 325), ("lora", 325 + 8 * 4 * 128), ("full", 135_813)])
def test_each_method_trains_what_it_says_and_never_touches_the_base(base, method, trainable):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = transfer_model(base, method, seed=3)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    head = model.get_base_model().classifier.modules_to_save["default"] if method == "lora" else model.classifier
    assert torch.equal(head.weight, new_head(base, 3).weight)          # every method starts from the same head
    assert all(torch.equal(base.state_dict()[k], v) for k, v in before.items())


def test_forgetting_is_measured_on_the_adapted_backbone_and_lora_switches_off_exactly(base, tasks):
    old = tasks["digits_0_4"]["test"]
    probe = run_transfer(base, "probe", 0.1, 0, new_task=tasks["digits_5_9"], old_task=tasks["digits_0_4"],
                         steps=3, keep_model=True)
    assert probe["old_head_on_adapted"] == round(image_accuracy(base, old), 4)    # a frozen backbone forgets nothing
    lora = run_transfer(base, "lora", 0.05, 0, new_task=tasks["digits_5_9"], old_task=tasks["digits_0_4"],
                        steps=3, keep_model=True)["model"]
    assert not torch.equal(cls_features(lora, old), cls_features(base, old))
    with lora.disable_adapter():
        assert torch.equal(lora(pixel_values=pixel_values(old)).logits, base(pixel_values=pixel_values(old)).logits)
        assert head_accuracy(lora, base.classifier, old) == image_accuracy(base, old)


def test_attention_from_cls_is_a_map_per_layer_over_the_patches(base, tasks):
    maps = attention_from_cls(base, list(tasks["digits_0_4"]["test"])[:8])
    assert maps.shape == (4, 4, 4) and (maps >= 0).all()
    assert (maps.sum(dim=(1, 2)) < 1).all()     # the rest of [CLS]'s attention goes to [CLS] itself


def test_the_stored_results_describe_the_experiment_as_defined():
    stored = load_results("nb15_images")
    assert stored["settings"]["seeds"] == list(nb15_images.SEEDS)
    expected = [f"{name}, {steps} steps" for name, (*_, budgets) in nb15_images.METHODS.items() for steps in budgets]
    assert list(stored["rows"]) == expected
    for name, row in stored["rows"].items():
        method, _, lrs, _ = nb15_images.METHODS[name.rsplit(",", 1)[0]]
        assert row["method"] == method and protocol.grew_from(row, lrs) and len(row["test"]) == len(nb15_images.SEEDS)
        assert row["lr"] == protocol.chosen_rate(row["validation_by_lr"])   # chosen on validation, reported on test
        assert row["test_summary"]["min"] <= row["test_summary"]["mean"] <= row["test_summary"]["max"]


def test_the_checkers_say_not_attempted_then_judge_on_the_stored_results(capsys):
    from peftlab.course.exercises import nb15_peft_for_images as nb15
    from peftlab.workbook.stats import compare
    assert not nb15.check_ranking(None) and not nb15.check_exact_keepers(None)
    assert not nb15.check_patch_conv(None, None, None)
    assert capsys.readouterr().out.count("not attempted") == 3
    short = {"linear probe": "probe", "LoRA": "lora", "full fine-tuning": "full"}
    right = nb15.measured_ranking()
    assert nb15.check_ranking([short[m] for m in right])
    groups = nb15.measured_groups()
    for group in groups:   # methods the seeds cannot separate may come in either order
        leader, *others = group
        assert all(compare(nb15._row(leader)["test"], nb15._row(n)["test"]).low <= 0 for n in others)
    if len(groups) > 1:
        assert not nb15.check_ranking([short[m] for m in reversed(right)])
    assert not nb15.check_ranking(["lora", "lora", "full"])
    assert nb15.check_exact_keepers({"probe", "lora off"}) and nb15.check_exact_keepers(["LoRA off", "probe"])
    assert not nb15.check_exact_keepers({"probe", "lora on"})
    assert not nb15.check_exact_keepers({"probe", "lora off", "full"})
    assert "overwrote" in capsys.readouterr().out
    runs = nb15.patch_conv_runs(0)
    effect = nb15.patch_conv_effect()
    assert not nb15.check_patch_conv(4 * (1 + 64), effect, runs)
    assert "in*k*k" in capsys.readouterr().out
    assert nb15.check_patch_conv(272, effect, runs)
    others = {"helps", "hurts", "no clear change"} - {effect}
    assert not any(nb15.check_patch_conv(272, other, runs) for other in others)
    typed = {name: {**run, "test": 0.123} for name, run in runs.items()}
    assert not nb15.check_patch_conv(272, effect, typed)
    assert "not the stored seed 0" in capsys.readouterr().out.splitlines()[-1]
