"""The FSDP memory plan (peftlab/workbook/fsdp_memory.py): ZeRO-3's shares plus the gathered units that the 2-rank
runs measure, QLoRA's quantization constants sharded (peftlab) or replicated (bitsandbytes), and the 70B plans."""
import pytest

from peftlab.workbook.fsdp_memory import CONSTANT_BITS, fewest_fsdp_gpus, fsdp_memory, llama_block_parameters
from peftlab.workbook.memory import LLAMA2_SHAPES, data_parallel_memory, lora_parameters

GIB = 2**30


def test_a_block_of_llama_2_70b_has_its_seven_matrices_and_two_norms():
    hidden, ffn, _, kv = LLAMA2_SHAPES["70B"]
    assert llama_block_parameters(hidden, ffn, kv) == 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192


@pytest.mark.parametrize("method", ["full", "LoRA", "QLoRA"])
def test_fsdp_is_zero_3_plus_the_root_two_blocks_and_one_blocks_gradients(method):
    hidden, ffn, _, kv = LLAMA2_SHAPES["70B"]
    block, adapter = llama_block_parameters(hidden, ffn, kv), lora_parameters(hidden, ffn, 1, 64, kv)
    bits = 4.127 if method == "QLoRA" else 16
    trained = block if method == "full" else adapter
    expected = 2 * (2 * 32000 * 8192 + 8192) + 2 * (block * bits / 8 + (0 if method == "full" else 2 * adapter)) \
        + 2 * trained
    for gpus in (2, 8):
        fsdp, zero3 = fsdp_memory("70B", method, gpus), data_parallel_memory("70B", method, gpus, 3)
        assert fsdp["gathered units"] == pytest.approx(expected, rel=1e-3)
        assert fsdp["total"] - zero3["total"] == fsdp["gathered units"]
        assert {k: v for k, v in fsdp.items() if k not in ("gathered units", "total")} == \
            {k: v for k, v in zero3.items() if k != "total"}


def test_bitsandbytes_replicated_constants_cost_what_each_gpu_does_not_share():
    hidden, ffn, layers, kv = LLAMA2_SHAPES["70B"]
    constants = layers * llama_block_parameters(hidden, ffn, kv) * CONSTANT_BITS / 8
    for gpus in (2, 8):
        extra = fsdp_memory("70B", "QLoRA", gpus, "replicated")["total"] - fsdp_memory("70B", "QLoRA", gpus)["total"]
        assert extra == pytest.approx(constants * (1 - 1 / gpus), abs=1)
    assert 0.8 * GIB < fsdp_memory("70B", "QLoRA", 8, "replicated")["weights"] - fsdp_memory("70B", "QLoRA", 8)[
        "weights"] < 1 * GIB
    assert fsdp_memory("70B", "QLoRA", 1, "replicated") == fsdp_memory("70B", "QLoRA", 1)


def test_which_70b_plans_fit_on_2_4_8_gpus():
    fits = {(method, gpu, n): fsdp_memory("70B", method, n)["total"] <= gpu * GIB
            for method in ("LoRA", "QLoRA") for gpu in (24, 48, 80) for n in (2, 4, 8)}
    assert [n for n in (2, 4, 8) if fits["LoRA", 80, n]] == [2, 4, 8]
    assert [n for n in (2, 4, 8) if fits["LoRA", 48, n]] == [4, 8]
    assert [n for n in (2, 4, 8) if fits["LoRA", 24, n]] == [8]
    assert [n for n in (2, 4, 8) if fits["QLoRA", 48, n]] == [2, 4, 8]
    assert [n for n in (2, 4, 8) if fits["QLoRA", 24, n]] == [4, 8]
    assert fewest_fsdp_gpus("70B", "QLoRA", 24 * GIB) == 3 and fewest_fsdp_gpus("70B", "LoRA", 24 * GIB) == 8


def test_bad_plans_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="sharded"):
        fsdp_memory("70B", "QLoRA", 2, constants="everywhere")
    with pytest.raises(ValueError, match="7B, 13B, 70B"):
        fsdp_memory("65B", "LoRA", 2)
