"""Fully sharded training (peftlab/workbook/distributed/fsdp.py): 2 ranks that each keep half of the model end where
1 process does, hold exactly their pieces, send exactly what the shapes predict, save a plain adapter that peft
loads; QLoRA's 4-bit base shards with its quantization constants, also under `accelerate launch`."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from peftlab import PeftModel
from peftlab.nf4 import Linear4bit
from peftlab.workbook.distributed import ACCELERATE_FSDP_CONFIG, RUN_FILE, build_model, parser, run_rank
from peftlab.workbook.distributed.check import one_process, saved_weights
from peftlab.workbook.distributed.collectives import ring_bytes_sent
from peftlab.workbook.distributed.fsdp import (
    decoder_blocks,
    expected_traffic,
    piece_bytes,
    shard_quantization_state,
)
from peftlab.workbook.distributed.runner import free_port
from peftlab.workbook.runtime import one_thread
from peftlab.workbook.zoo import load_base_model

BLOCKS = 4   # pico-llama-1m


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """`python -m peftlab.workbook.distributed --fsdp --check`, keeping both adapters."""
    folder = tmp_path_factory.mktemp("fsdp-check")
    result = subprocess.run([sys.executable, "-m", "peftlab.workbook.distributed", "--fsdp", "--check", "--device",
                             "cpu", "--keep", str(folder), "--report", str(folder / "report.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return json.loads((folder / "report.json").read_text()), folder, result.stdout


def test_two_sharded_ranks_have_the_losses_and_the_adapter_of_one_process(check):
    report, _, stdout = check
    assert report["ranks"] == 2 and report["backend"] == "gloo" and report["steps"] == 30
    assert report["max_loss_difference"] <= report["tolerance"] == 1e-5
    assert report["max_abs_difference"] <= report["tolerance"]
    assert report["moved"] > 1000 * report["tolerance"], "training moved the weights: the agreement is not trivial"
    assert report["losses"][-1] < report["losses"][0] / 3
    assert "check passed" in stdout


def test_each_rank_keeps_its_pieces_and_together_one_copy(check):
    report, _, _ = check
    whole, pieces = report["ddp_parameter_bytes"], report["fsdp_parameter_bytes"]
    assert pieces == report["fsdp_parameter_bytes_expected"]
    assert sum(pieces) == whole == 4 * (1_045_760 + 7_168)          # fp32 base + LoRA r=4 on q, v
    assert all(whole / 2 - 1024 <= p <= whole / 2 + 1024 for p in pieces), "half each, up to the padding"
    assert [2 * b < report["ddp_base_bytes"] + 2048 for b in report["fsdp_base_bytes"]] == [True, True]


def test_a_rank_gathers_a_block_at_a_time_one_ahead_and_keeps_the_root_through_the_step(check):
    report, _, _ = check
    moments = report["held_during_step"][0]
    forward = [f"forward block {i}" for i in range(BLOCKS)]
    backward = [f"backward block {i}" for i in reversed(range(BLOCKS))]
    assert [m["moment"] for m in moments] == ["before the step", "forward root", *forward, "forward root",
                                              "backward root", *backward, "after the optimizer step"]
    pieces, units = report["fsdp_parameter_bytes"][0], report["unit_bytes"]
    for m in moments:
        unit = m["moment"].split(" ", 1)[1]                       # "root", "block 2"; "the step" before and after
        expected = [] if m["moment"].endswith("step") else ["root"] + ([unit] if unit != "root" else [])
        assert m["gathered"] == expected, m
        assert m["gathering"] in (0, units["root"], units["block 0"]), "at most one all-gather buffer besides"
        assert m["bytes"] == pieces + sum(units[u] for u in expected) + m["gathering"]
    assert max(report["fsdp_peak_bytes"]) == pieces + units["root"] + 2 * units["block 0"], (
        "the peak: its pieces, the root, the block computing and one more block's buffer (fsdp_memory's model)")
    assert moments[-1]["bytes"] == pieces, "between steps, only the pieces"


def test_the_bytes_sent_are_the_shapes_blocks_twice_root_once_and_the_adapter_gradients(check):
    report, _, stdout = check
    sent, units = report["fsdp_bytes_per_step"], report["unit_bytes"]
    assert sent == report["fsdp_bytes_expected"]
    assert report["collectives_per_step"] == {"all-gather": 1 + 2 * BLOCKS, "reduce-scatter": BLOCKS, "all-reduce": 1}
    assert sent["all-gather"] == units["root"] + 2 * sum(units[f"block {i}"] for i in range(BLOCKS))
    assert sent["reduce-scatter"] == report["ddp_bytes_per_step"] == 4 * report["trainable"] == 4 * 7_168
    assert sent["all-reduce"] == 4 * 16, "clipping: one partial norm per trainable tensor (4 layers x q, v x A, B)"
    assert report["fsdp_ring_bytes_sent"] > 100 * report["ddp_ring_bytes_sent"], "FSDP trades traffic for memory"
    assert f"{sent['all-gather']:,.0f}" in stdout


def test_expected_traffic_counts_padding_the_way_fsdp_pads():
    embedding = torch.nn.Parameter(torch.zeros(481, 128))            # 481 rows: 241 + 240 on 2 ranks
    assert piece_bytes(embedding, 0, 2) == 241 * 128 * 4 and piece_bytes(embedding, 1, 2) == 240 * 128 * 4
    assert piece_bytes(embedding, 3, 4) == 118 * 128 * 4             # 121, 121, 121, 118
    lora_a = torch.nn.Parameter(torch.zeros(4, 128))
    params = {"e": embedding.requires_grad_(False), "a": lora_a}
    traffic = expected_traffic(params, {"root": ["e"], "block 0": ["a"]}, 2)
    assert traffic == {"all-gather": 482 * 128 * 4 + 2 * 4 * 128 * 4, "reduce-scatter": 4 * 128 * 4, "all-reduce": 4}
    assert ring_bytes_sent({"all-reduce": 100, "all-gather": 100}, 2) == 100 + 50


def test_the_saved_adapter_is_a_plain_peft_folder_that_peft_loads_to_the_same_logits(check):
    peft = pytest.importorskip("peft")
    report, folder, _ = check
    sharded, single = folder / "2_ranks", folder / "one_process"
    assert sorted(p.name for p in sharded.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", RUN_FILE]
    ours, reference = saved_weights(sharded), saved_weights(single)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}, "gathered, not pieces"
    ids = torch.randint(1, 400, (2, 12), generator=torch.Generator().manual_seed(0))

    def logits(model):
        with torch.no_grad():
            return model.eval()(input_ids=ids).logits
    theirs = logits(peft.PeftModel.from_pretrained(load_base_model()[0], sharded))
    assert (theirs - logits(PeftModel.from_pretrained(load_base_model()[0], sharded))).abs().max() < 1e-5
    one = logits(peft.PeftModel.from_pretrained(load_base_model()[0], single))
    assert 0 < (theirs - one).abs().max() < 1e-3, "the 2-rank adapter computes what the 1-process one does"


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="accelerate is not installed")
def test_qlora_shards_its_4_bit_base_with_its_constants_under_accelerate_launch_and_matches_one_process(tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_FSDP_CONFIG),
               "-m", "peftlab.workbook.distributed", "--device", "cpu", "--method", "qlora", "--out", str(tmp_path)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=os.environ | {"OMP_NUM_THREADS": "1"})
    args = parser().parse_args(["--method", "qlora"])
    try:
        with one_thread():                                        # meanwhile: the same run in this process
            _, single, losses = one_process(args)
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, stderr[-3000:]
    run = json.loads((tmp_path / RUN_FILE).read_text())
    assert run["fsdp"] and run["world_size"] == 2 and run["backend"] == "gloo", "the config file's FSDP reached the run"
    assert run["quantization_tensors_sharded"] == 2 * 7 * BLOCKS, "absmax codes and scales of every 4-bit layer"
    pieces = [sum(r["piece_bytes"].values()) for r in run["per_rank"]]
    assert pieces == [sum(r["piece_bytes_expected"].values()) for r in run["per_rank"]]
    assert sum(pieces) == sum(run["full_copy_bytes"].values())
    assert run["buffer_bytes"] == 128 + 4 * 7 * BLOCKS, "left whole: the rotary table and one absmax mean per layer"
    assert run["collective_bytes_per_step"] == run["collective_bytes_expected"]
    assert run["unit_bytes"]["block 0"] < 991_232 / 7, "a block travels in 4 bits: over 7 times less than in fp32"

    difference = max((saved_weights(tmp_path)[k] - v).abs().max().item() for k, v in single.items())
    assert difference <= args.tolerance and max(abs(a - b) for a, b in zip(run["losses"], losses)) <= args.tolerance


def test_fsdp_refuses_full_fine_tuning_before_joining_a_process_group():
    with pytest.raises(ValueError, match="--method lora or --method qlora"):
        run_rank(parser().parse_args(["--fsdp", "--method", "full"]))


def test_quantization_constants_become_frozen_parameters_that_count_as_no_weights():
    model, _ = build_model("qlora")
    before = {n: t.clone() for n, t in model.state_dict().items()}
    total = sum(getattr(p, "logical_numel", p.numel()) for p in model.parameters())
    assert shard_quantization_state(model) == 2 * 7 * BLOCKS
    layer = next(m for m in model.modules() if isinstance(m, Linear4bit))
    assert {n for n, _ in layer.named_parameters()} == {"weight", "absmax_codes", "absmax_scales"}
    assert [n for n, _ in layer.named_buffers()] == ["absmax_mean"]
    assert not any(p.requires_grad for p in layer.parameters())
    assert sum(getattr(p, "logical_numel", p.numel()) for p in model.parameters()) == total
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[n], t) for n, t in before.items()), (
        "the same tensors, under the same names")
    assert shard_quantization_state(model) == 0, "running it twice moves nothing"
    assert len(decoder_blocks(model)) == BLOCKS
    with pytest.raises(ValueError, match="no decoder block"):
        decoder_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_bitsandbytes_keeps_the_quantization_state_outside_what_fsdp_shards():
    # The real recipe (transformers' BitsAndBytesConfig + accelerate's FSDP): fully_shard shards a module's
    # parameters and copies its buffers; bitsandbytes' absmax lives on the weight's quant_state, neither of them.
    bnb = pytest.importorskip("bitsandbytes")
    weight = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))
    layer = bnb.nn.Linear4bit(128, 128, bias=False, quant_type="nf4", compress_statistics=True,
                              quant_storage=torch.bfloat16)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=True,
                                     quant_storage=torch.bfloat16, blocksize=64)
    layer.weight._quantize("cpu")
    assert [(n, p.dtype) for n, p in layer.named_parameters()] == [("weight", torch.bfloat16)]
    assert layer.weight.numel() * layer.weight.element_size() == 128 * 128 // 2, "4 bits a weight, labelled bf16"
    assert list(layer.named_buffers()) == []
    state = layer.weight.quant_state
    assert state.absmax.numel() == 128 * 128 // 64 and state.nested, "one (8-bit) absmax per block of 64"
    seen = {id(t) for t in (*layer.parameters(), *layer.buffers())}
    assert id(state.absmax) not in seen and id(state.state2.absmax) not in seen


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="accelerate is not installed")
@pytest.mark.parametrize("cpu, expected", [(True, "DistributedType.MULTI_CPU DistributedDataParallel False"),
                                           (False, "DistributedType.NO Sequential False")])
def test_accelerates_fsdp_plugin_does_not_shard_on_cpu(cpu, expected):
    # accelerate 1.16 (state.py) turns FSDP on only for accelerator devices. On CPUs, Accelerator(cpu=True) is
    # MULTI_CPU and prepare() wraps the model in DDP; without cpu=True it finds no device to distribute over and
    # leaves the model alone. Either way the FSDP plugin is ignored: hence the runner's own fully_shard.
    script = ("import torch\nfrom accelerate import Accelerator\n"
              "from accelerate.utils import FullyShardedDataParallelPlugin\n"
              "from torch.distributed.fsdp import FSDPModule\n"
              f"a = Accelerator(cpu={cpu}, fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=2))\n"
              "m = a.prepare(torch.nn.Sequential(torch.nn.Linear(4, 4)))\n"
              "print(a.distributed_type, type(m).__name__, isinstance(m, FSDPModule))\n")
    env = os.environ | {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == expected
