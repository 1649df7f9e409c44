"""Data-parallel training (peftlab/workbook/distributed/runner.py): 2 ranks end where 1 process does, only the trainable
gradients are all-reduced, rank 0 alone saves, and a rank that dies or hangs ends the job with a clear error."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from peftlab import LoraConfig, PeftModel, get_peft_model
from peftlab.hf_format import get_peft_model_state_dict
from peftlab.workbook import PromptTargetCollator, load_base_model, load_task
from peftlab.workbook.distributed import ShardedCollator, lost_contact, parser, run_rank, save_on_rank_zero
from peftlab.workbook.distributed.check import RANKS, start_torchrun


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """`python -m peftlab.workbook.distributed --check`, exactly as CI runs it."""
    report = tmp_path_factory.mktemp("check") / "report.json"
    result = subprocess.run([sys.executable, "-m", "peftlab.workbook.distributed", "--check", "--report", str(report)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(report.read_text()), result.stdout


def test_two_ranks_with_half_the_batch_each_end_where_one_process_with_the_whole_batch_does(check):
    report, stdout = check
    assert report["ranks"] == RANKS == 2 and report["backend"] == "gloo"
    assert report["max_abs_difference"] <= report["tolerance"] == 1e-5
    assert report["moved"] > 1000 * report["tolerance"], "training moved the weights: the agreement is not trivial"
    assert "check passed" in stdout


def test_the_bytes_all_reduced_per_step_are_the_trainable_gradients_so_their_ratio_is_the_trainable_share(check):
    report, stdout = check
    assert report["bytes_per_step"] == 4 * report["trainable"] == 4 * 7_168     # LoRA r=4 on q, v: fp32 gradients
    assert report["full_ft_bytes_per_step"] == 4 * report["full_ft_trainable"]
    assert report["bytes_ratio"] == pytest.approx(report["trainable"] / report["full_ft_trainable"])
    assert report["bytes_ratio"] < 0.01
    assert f"{report['bytes_per_step']:,.0f} bytes" in stdout


@pytest.mark.parametrize("method", ["lora", "ia3", "vera", "full"])
def test_ddp_all_reduces_exactly_the_parameters_that_require_grad(method):
    summary = run_rank(parser().parse_args(["--method", method, "--steps", "2"]))   # one rank, gloo, in-process
    assert summary["world_size"] == 1
    assert summary["allreduce_bytes_per_step"] == 4 * summary["trainable"]
    assert (summary["trainable"] == summary["total"]) == (method == "full")


def test_sharded_losses_average_to_the_whole_batch_loss_even_when_answers_differ_in_length():
    model, tokenizer = load_base_model()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    collate = PromptTargetCollator(tokenizer)
    rows = list(load_task("capitals")["train"])[16:32]       # the two halves hold 16 and 17 answer tokens

    def gradients(batch):
        model.zero_grad()
        model(**batch).loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    whole = gradients(collate(rows))
    shards = [ShardedCollator(collate, rank, 2)(rows) for rank in range(2)]
    weighted = (gradients(shards[0]) + gradients(shards[1])) / 2                     # what DDP averages
    plain = sum(gradients({k: v for k, v in s.items() if k != "num_items_in_batch"}) for s in shards) / 2
    torch.testing.assert_close(weighted, whole, atol=1e-5, rtol=1e-5)
    assert (plain - whole).abs().max() > 1e-3, "without the token weighting, the mean of the means is off"
    assert torch.equal(torch.cat([s["input_ids"] for s in shards]), collate(rows)["input_ids"])
    with pytest.raises(ValueError, match="multiple of the number of ranks"):
        ShardedCollator(collate, 0, 3)(rows)


def test_only_rank_zero_writes_the_adapter(tmp_path):
    model, _ = load_base_model()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert not save_on_rank_zero(model, tmp_path / "rank1", rank=1, summary={})
    assert not (tmp_path / "rank1").exists()
    assert save_on_rank_zero(model, tmp_path / "rank0", rank=0, summary={"world_size": 2})
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "distributed_run.json"]
    loaded = PeftModel.from_pretrained(load_base_model()[0], tmp_path / "rank0")
    for key, value in get_peft_model_state_dict(model).items():
        assert torch.equal(get_peft_model_state_dict(loaded)[key], value)


def test_a_backend_error_about_a_peer_counts_as_lost_contact_and_a_bug_does_not():
    assert lost_contact(RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:4507"))
    assert lost_contact(RuntimeError("Timed out waiting 5000ms for recv operation to complete"))
    assert not lost_contact(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.parametrize("mode, symptom", [("exit", "exitcode  : 3"), ("hang", "Timed out")])
def test_a_rank_that_dies_or_hangs_ends_the_job_with_a_clear_error_not_a_hang(mode, symptom):
    start = time.monotonic()
    job = start_torchrun(["--steps", "6", "--fail-rank", "1", "--fail-step", "2", "--fail-mode", mode,
                          "--timeout", "5"])
    try:
        _, stderr = job.communicate(timeout=240)
    finally:
        job.kill()
    elapsed = time.monotonic() - start
    assert job.returncode != 0
    assert f"[rank 1] failure drill: {mode} at step 2" in stderr
    assert symptom in stderr
    if mode == "hang":   # rank 0 waited the 5 s timeout, then said why it stopped
        assert "[rank 0] peftlab.workbook.distributed: lost contact with another rank" in stderr
    assert elapsed < 180, f"the job took {elapsed:.0f} s to end"


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="accelerate is not installed")
def test_the_module_runs_unchanged_under_accelerate_launch(tmp_path):
    # accelerate's multi-process launcher is torchrun underneath: the same RANK / WORLD_SIZE reach the module.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "peftlab.workbook.distributed", "--device", "cpu", "--steps", "2", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "distributed_run.json").read_text())
    assert run["world_size"] == 2 and run["backend"] == "gloo"
    assert run["allreduce_bytes_per_step"] == 4 * run["trainable"]
