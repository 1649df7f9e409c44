"""Notebook 09's encoder comparison over seeds, by one protocol (experiments/protocol.py).

P-tuning with an MLP encoder, with a BiLSTM encoder, and plain prompt tuning (the table trained
directly), P = 8 virtual tokens on pico-llama-1m, the capitals task in the probe's format, 150 steps
of 16 (the notebook's budget), each method's learning rate picked from a 3-value grid on the 16
validation countries (grown past a winning edge: protocol.pick_rate), seeds 0-4, greedy exact
match on the 40 test countries, none seen in training.

    python -m peftlab.course.experiments.nb09_encoders          # writes results/nb09_encoders.json
"""
from peftlab.tuners import PromptEncoderConfig, PromptTuningConfig

from .protocol import Method, compare, run_and_save

P, H = 8, 128   # the notebook's prompt length and encoder width (the model's width)
SETTINGS = dict(base_name="pico-llama-1m", task_name="capitals", steps=150, batch_size=16, seeds=(0, 1, 2, 3, 4),
                n_validation=16, n_test=40)


def encoder(kind: str) -> PromptEncoderConfig:
    return PromptEncoderConfig(num_virtual_tokens=P, encoder_reparameterization_type=kind, encoder_hidden_size=H)


# The grids bracket the notebook's first rates: 1e-2 for the encoders, 1e-1 for the table.
METHODS = {
    "P-tuning, MLP encoder": Method(lambda: encoder("MLP"), (3e-3, 1e-2, 3e-2)),
    "P-tuning, LSTM encoder": Method(lambda: encoder("LSTM"), (3e-3, 1e-2, 3e-2)),
    "prompt tuning": Method(lambda: PromptTuningConfig(num_virtual_tokens=P), (3e-2, 1e-1, 3e-1)),
}


def main() -> None:
    run_and_save("nb09_encoders", lambda: compare(METHODS, **SETTINGS), threads=1)


if __name__ == "__main__":
    main()
