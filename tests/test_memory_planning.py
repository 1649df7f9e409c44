"""Memory planning for real models (memory.py): Llama 2 shapes with grouped-query attention, the ZeRO stages'
partitioning (the ZeRO paper's own example), and the planner widget of notebook 14."""
import pytest
import torch

from peftlab.workbook.memory import (
    LLAMA2_SHAPES,
    LLAMA_SHAPES,
    data_parallel_memory,
    fewest_gpus,
    finetuning_memory,
    llama_block_activations,
    llama_parameters,
    lora_parameters,
    memory_breakdown,
    zero_partition,
)

GIB, GB = 2**30, 1e9


def test_llama2_shapes_give_the_published_sizes():
    sizes = [round(llama_parameters(h, f, n, kv=kv) / 1e9, 2) for h, f, n, kv in LLAMA2_SHAPES.values()]
    assert sizes == [6.74, 13.02, 68.98]        # Touvron et al. 2023 (Llama 2) list 7B, 13B, 70B
    hidden, ffn, layers, kv = LLAMA2_SHAPES["70B"]
    per_rank = 2 * (8192 + 8192) + 2 * (8192 + 1024) + 3 * (8192 + 28672)      # q, o; k, v; gate, up, down
    assert lora_parameters(hidden, ffn, layers, 64, kv) == 80 * 64 * per_rank
    for size in ("7B", "13B"):                  # no grouped-query attention below 70B: LLaMA's numbers
        assert finetuning_memory(size, "LoRA", generation=2) == finetuning_memory(size, "LoRA", generation=1)
    with pytest.raises(ValueError, match="7B, 13B, 70B"):
        finetuning_memory("65B", "LoRA", generation=2)
    with pytest.raises(ValueError, match="generation"):
        finetuning_memory("7B", "LoRA", generation=3)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("r", [None, 4])
def test_grouped_query_activations_count_what_autograd_saves(attention, r):
    from test_memory import saved_activation_bytes
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab import LoraConfig, get_peft_model
    hidden, ffn, heads, kv_heads, vocab, batch, seq = 96, 256, 6, 2, 512, 2, 24

    def measure(layers):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                                             num_attention_heads=heads, num_key_value_heads=kv_heads,
                                             vocab_size=vocab, attn_implementation=attention))
        if r is not None:
            model = get_peft_model(model, LoraConfig(r=r, target_modules="all-linear"))
        return saved_activation_bytes(model, torch.randint(0, vocab, (batch, seq)))
    per_block = (measure(3) - measure(1)) / 2
    kv = kv_heads * hidden // heads
    assert per_block == llama_block_activations(hidden, ffn, r, seq, attention, heads, kv) * 4 * batch * seq


def test_zero_stages_reproduce_the_papers_example():
    # Rajbhandari et al. 2019, Figure 1: 7.5B parameters, 64 GPUs, mixed-precision Adam (K = 12).
    bill = memory_breakdown(7_500_000_000, precision="mixed")
    per_gpu = [zero_partition(bill, 64, stage)["total"] / GB for stage in range(4)]
    assert [round(x, 1) for x in per_gpu] == [120.0, 31.4, 16.6, 1.9]
    assert zero_partition(bill, 1, 3) == bill
    with pytest.raises(ValueError, match="ZeRO stage"):
        zero_partition(bill, 2, 4)


def test_a_frozen_base_is_divided_only_by_zero_3():
    lora = [data_parallel_memory("70B", "LoRA", 8, stage) for stage in range(4)]
    assert lora[0]["weights"] == lora[2]["weights"] > 128 * GIB          # a 16-bit 70B base on every GPU
    assert lora[2]["total"] > 0.9 * lora[0]["total"]                     # stages 1-2 divide only the adapters' state
    assert lora[3]["total"] < 80 * GIB < lora[2]["total"]
    assert lora[3]["activations"] == lora[0]["activations"]              # each GPU keeps its own batch's


def test_fewest_gpus_for_the_notebooks_plans():
    gpu = 80 * GIB
    assert fewest_gpus("7B", "full", gpu, 0) is None                     # DDP: 100 GiB on every GPU, however many
    assert fewest_gpus("7B", "full", gpu, 1) == 2
    assert [fewest_gpus("13B", "full", gpu, stage) for stage in range(4)] == [None, 5, 4, 3]   # every count tried
    assert fewest_gpus("70B", "full", gpu, 3) == 13
    assert fewest_gpus("70B", "LoRA", gpu, 2) is None and fewest_gpus("70B", "LoRA", gpu, 3) == 2
    assert fewest_gpus("70B", "QLoRA", 48 * GIB, 0) == 1


def test_the_planner_titles_its_verdict_and_follows_its_buttons():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftlab.course.widgets import zero_memory_planner
    box = zero_memory_planner()
    size, method, gpus, memory, _ = box.children
    assert plt.gcf().axes[0].get_title() == "Llama 2 13B, full, 4 GPU(s): fits from ZeRO-2 on"
    size.value, method.value, gpus.value = "70B", "LoRA", 1
    assert plt.gcf().axes[0].get_title() == "Llama 2 70B, LoRA, 1 GPU(s): does not fit in 80 GB"
    method.value, memory.value = "QLoRA", "48 GB"
    assert plt.gcf().axes[0].get_title() == "Llama 2 70B, QLoRA, 1 GPU(s): fits from ZeRO-0 on"
    plt.close("all")
    assert LLAMA_SHAPES["7B"] == LLAMA2_SHAPES["7B"][:3]
