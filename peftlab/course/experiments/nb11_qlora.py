"""Notebook 11's comparison: the same LoRA on the float base and on the 4-bit NF4 base (QLoRA), by one
protocol (experiments/protocol.py).

pico-llama-1m, sentiment, LoRA r=8 on q and v, 40 steps of 16 examples (with a generous budget
both reach 1.000 and the comparison would say nothing), each variant's learning rate picked from a
3-value grid on 200 validation reviews, 5 seeds, accuracy on 500 test reviews.

    python -m peftlab.course.experiments.nb11_qlora          # writes results/nb11_qlora.json
"""
from peftlab.nf4 import quantize_model
from peftlab.tuners import LoraConfig

from .protocol import Method, compare, run_and_save

SETTINGS = dict(base_name="pico-llama-1m", task_name="sentiment", steps=40, batch_size=16, seeds=(0, 1, 2, 3, 4))
LRS = (3e-3, 1e-2, 3e-2)


def lora():
    return LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])


METHODS = {
    "LoRA, float base": Method(lora, LRS),
    "QLoRA, NF4 base": Method(lora, LRS, prepare_base=lambda model: quantize_model(model, double_quant=False)),
    "QLoRA, NF4 + double quantization": Method(lora, LRS, prepare_base=quantize_model),
}


def main() -> None:
    # One thread: the notebook re-runs seed 0 on one thread too, and then gets the stored numbers exactly.
    run_and_save("nb11_qlora", lambda: compare(METHODS, **SETTINGS), threads=1)


if __name__ == "__main__":
    main()
