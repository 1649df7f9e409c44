"""The memory arithmetic agrees with the tensors PyTorch really allocates."""
import pytest
import torch

from peftlab.workbook.memory import measured_bytes, memory_breakdown, parameter_counts


def tied_model():
    emb = torch.nn.Embedding(10, 6)
    head = torch.nn.Linear(6, 10, bias=False)
    head.weight = emb.weight                       # tied, like the bundled model
    return torch.nn.Sequential(emb, torch.nn.Linear(6, 6), head)


def test_counts_tied_parameters_once():
    model = tied_model()
    counts = parameter_counts(model)
    assert counts["total"] == 60 + 42 and counts["trainable"] == 102 and counts["percent"] == 100.0
    model[1].requires_grad_(False)
    assert parameter_counts(model)["trainable"] == 60


@pytest.mark.parametrize("precision, per_param", [("fp32", 16), ("mixed", 16)])
def test_full_finetuning_costs_16_bytes_per_parameter(precision, per_param):
    assert memory_breakdown(1000, precision=precision)["total"] == per_param * 1000


def test_frozen_parameters_cost_only_their_weights():
    parts = memory_breakdown(1000, trainable=10, precision="mixed")
    assert parts["weights"] == 2000 and parts["gradients"] == 20 and parts["Adam moments"] == 80
    assert parts["total"] == 2000 + 10 * 14


def test_prediction_matches_measured_adam_training_state():
    model = tied_model()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.arange(4)).sum().backward()
    optimizer.step()
    real, predicted = measured_bytes(model, optimizer), memory_breakdown(102, precision="fp32")
    for part in ("weights", "gradients", "Adam moments", "total"):
        assert real[part] == predicted[part]


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="fp32"):
        memory_breakdown(10, precision="fp8")
    with pytest.raises(ValueError, match="between 0 and total"):
        memory_breakdown(10, trainable=11)


def test_llama_shapes_give_the_published_sizes_and_qlora_fits_65b_in_48_gb():
    from peftlab.workbook.memory import LLAMA_SHAPES, finetuning_memory, llama_parameters, lora_parameters
    sizes = {name: llama_parameters(*shape) / 1e9 for name, shape in LLAMA_SHAPES.items()}
    assert [round(s, 1) for s in sizes.values()] == [6.7, 13.0, 32.5, 65.3]   # Touvron et al. 2023: 6.7, 13, 32.5, 65.2
    assert lora_parameters(*LLAMA_SHAPES["65B"], r=64) == 80 * 64 * (8 * 8192 + 3 * (8192 + 22016))
    need = {m: finetuning_memory("65B", m)["total"] for m in ("full", "LoRA", "QLoRA")}   # batch 1 x 512
    assert need["full"] > 780e9 and need["LoRA"] > 80 * 2**30 and need["QLoRA"] < 48 * 2**30
    assert finetuning_memory("65B", "QLoRA", checkpointing=False)["total"] > 48 * 2**30
    qlora, lora = finetuning_memory("65B", "QLoRA"), finetuning_memory("65B", "LoRA")
    assert {k: v for k, v in qlora.items() if k not in ("weights", "total")} == \
        {k: v for k, v in lora.items() if k not in ("weights", "total")}
    embeddings = 2 * 32000 * 8192                   # input and output: they stay 16-bit
    linear = llama_parameters(*LLAMA_SHAPES["65B"]) - embeddings
    expected = linear * 4.127 / 8 + embeddings * 2 + lora_parameters(*LLAMA_SHAPES["65B"], r=64) * 2
    assert abs(qlora["weights"] - expected) < 1e-4 * expected
    with pytest.raises(ValueError, match="QLoRA"):
        finetuning_memory("65B", "qlora")


def saved_activation_bytes(model, ids) -> int:
    """Bytes of the tensors autograd saves for backward in one forward pass (parameters excluded)."""
    params = {p.data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(storages.values())


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("r", [None, 4])
def test_activation_formula_counts_what_autograd_saves(attention, r):
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab import LoraConfig, get_peft_model
    from peftlab.workbook.memory import llama_activation_bytes, llama_block_activations
    hidden, ffn, heads, vocab, batch, seq = 96, 256, 3, 512, 2, 24

    def measure(layers):
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=heads, vocab_size=vocab,
                             attn_implementation=attention)
        model = LlamaForCausalLM(config)
        if r is not None:
            model = get_peft_model(model, LoraConfig(r=r, target_modules="all-linear"))
        return saved_activation_bytes(model, torch.randint(0, vocab, (batch, seq)))
    one, three = measure(1), measure(3)
    per_block = llama_block_activations(hidden, ffn, r, seq, attention, heads) * 4 * batch * seq
    assert (three - one) / 2 == per_block                       # exact, block by block (fp32: 4 bytes)
    predicted = llama_activation_bytes(hidden, ffn, 3, batch, seq, r, checkpointing=False, value_bytes=4,
                                       vocab=vocab, attention=attention, heads=heads)
    assert 0 <= three - predicted < 0.01 * three     # left out: the rotary tables, the token ids


def test_activation_bytes_with_and_without_checkpointing():
    from peftlab.workbook.memory import LLAMA_SHAPES, llama_activation_bytes
    hidden, ffn, layers = LLAMA_SHAPES["65B"]
    kept = llama_activation_bytes(hidden, ffn, layers, batch=1, seq=512, r=64)
    assert kept == 512 * (2 * (80 * 8192 + 8 * 8192 + 7 * 64 + 4 * 22016 + 64 + 2) + 4 * 32000)
    everything = llama_activation_bytes(hidden, ffn, layers, batch=1, seq=512, r=64, checkpointing=False)
    assert everything > 10 * kept                  # 80 blocks against 1 block and 80 inputs
    with pytest.raises(ValueError, match="sdpa"):
        llama_activation_bytes(hidden, ffn, layers, 1, 512, attention="flash")


def test_frozen_bits_price_only_the_frozen_parameters():
    full = memory_breakdown(1000, 10, precision="mixed")
    quantized = memory_breakdown(1000, 10, precision="mixed", frozen_bits=4)
    assert full["weights"] == 2 * 1000 and quantized["weights"] == 2 * 10 + 990 // 2
    assert {k: v for k, v in full.items() if k not in ("weights", "total")} == \
        {k: v for k, v in quantized.items() if k not in ("weights", "total")}


def test_qlora_calculator_titles_the_total_and_follows_its_buttons():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftlab.course.widgets import qlora_memory_calculator
    from peftlab.workbook.memory import finetuning_memory
    box = qlora_memory_calculator()
    size, method, rank, batch, seq, checkpointing, _ = box.children
    first = finetuning_memory("65B", "QLoRA")["total"] / 2**30
    assert plt.gcf().axes[0].get_title() == f"LLaMA-65B, QLoRA: {first:,.1f} GiB"
    size.value, method.value, rank.value, batch.value, seq.value, checkpointing.value = "7B", "LoRA", 8, 4, 1024, False
    expected = finetuning_memory("7B", "LoRA", 8, batch=4, seq=1024, checkpointing=False)["total"] / 2**30
    assert plt.gcf().axes[0].get_title() == f"LLaMA-7B, LoRA: {expected:,.1f} GiB"
    plt.close("all")
