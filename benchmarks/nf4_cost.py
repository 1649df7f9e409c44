"""What NF4 costs and saves: a Linear4bit's forward + backward against a float nn.Linear, and the memory
of whole models in float32, NF4 and NF4 with double quantization, from the bytes their tensors hold.

    python benchmarks/nf4_cost.py                    # CPU; about a minute
    python benchmarks/nf4_cost.py --device cuda      # where a GPU is available

Timings are medians of interleaved repetitions (float, 4-bit, float, 4-bit...), so that a busy spell
of a shared machine hits both alike. The 4-bit layer dequantizes its weight in the forward pass and
again in the backward pass (peftlab/nf4.py, DequantizedMatmul): that is the time it pays for its memory.
"""
import argparse
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from peftlab.nf4 import Linear4bit, quantize_model
from peftlab.workbook.memory import human_bytes, stored_bytes
from peftlab.workbook.zoo import load_base_model

SHAPES = [(128, 512), (768, 2048), (2048, 5632)]        # (in, out): the bundled model, ~100M, ~1B
MODEL_100M = dict(hidden_size=768, num_hidden_layers=12, intermediate_size=2048, num_attention_heads=12,
                  num_key_value_heads=12, vocab_size=32000, tie_word_embeddings=True)


def time_layers(layers: dict, x: torch.Tensor, repeats: int, sync) -> dict[str, float]:
    """Median milliseconds of a forward + backward through each layer, interleaved."""
    times = {name: [] for name in layers}
    for _ in range(repeats):
        for name, layer in layers.items():
            sync()
            start = time.perf_counter()
            layer(x).sum().backward()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
            x.grad = None
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--tokens", type=int, default=512, help="rows of the input batch")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    print(f"## NF4 on {device} ({args.threads} threads), torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    print(f"Forward + backward (gradient for the input only: the base is frozen), {args.tokens} tokens, "
          f"median of {args.repeats} interleaved repetitions:\n")
    print("| layer (in x out) | float nn.Linear ms | Linear4bit ms | ratio |")
    print("|---|---:|---:|---:|")
    for fan_in, fan_out in SHAPES:
        torch.manual_seed(0)
        linear = torch.nn.Linear(fan_in, fan_out, device=device).requires_grad_(False)
        layers = {"float": linear, "nf4": Linear4bit(linear).to(device)}
        x = torch.randn(args.tokens, fan_in, device=device, requires_grad=True)
        time_layers(layers, x, 3, sync)                                            # warm up
        ms = time_layers(layers, x, args.repeats, sync)
        print(f"| {fan_in} x {fan_out} | {ms['float']:.2f} | {ms['nf4']:.2f} | {ms['nf4'] / ms['float']:.2f} |")

    print("\nMemory of whole models, every parameter and buffer (embeddings and the output head stay float32):\n")
    print("| model | float32 | NF4 | NF4 + double quantization | linear layers |")
    print("|---|---:|---:|---:|---:|")
    torch.manual_seed(0)
    for name, build in [("pico-llama-1m", lambda: load_base_model()[0]),
                        ("~100M Llama", lambda: LlamaForCausalLM(LlamaConfig(**MODEL_100M)))]:
        model = build()
        full = stored_bytes(model)
        single = quantize_model(build(), double_quant=False)
        double = quantize_model(model, double_quant=True)
        print(f"| {name} | {human_bytes(full)} | {human_bytes(single['bytes_after'])} "
              f"({single['bytes_after'] / full:.2f}x) | {human_bytes(double['bytes_after'])} "
              f"({double['bytes_after'] / full:.2f}x) | {double['layers']} |")


if __name__ == "__main__":
    main()
