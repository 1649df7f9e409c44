"""The workbook: what the course runs on, built on the library (`peftlab`) and knowing nothing of
the course (`peftlab.course`).

- data/ (the generated corpus and task sets), zoo.py (the bundled base models), tokenizer.py,
  pretrain.py (how they were made), vision.py and pretrain_vision.py (the bundled image model);
- batching.py and training.py: rows into batches, the one training loop; runtime.py: seeds,
  threads, device;
- evaluate.py: perplexity, accuracy, recall; memory.py: parameter and memory arithmetic (fsdp_memory.py:
  what FSDP adds to it);
  decomposition.py: the weight a layer applies, in magnitude and direction; inference_cost.py:
  operations and time of a forward pass;
- distributed/: the training loop on several processes (torchrun; DDP, or FSDP with --fsdp).

The names notebooks use most are importable from here: `from peftlab.workbook import load_base_model, train`.
"""
from peftlab.workbook import evaluate
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import load_corpus, load_task
from peftlab.workbook.evaluate import exact_match, fact_recall, fact_recall_by_rank, label_accuracy, perplexity
from peftlab.workbook.memory import memory_breakdown, parameter_counts
from peftlab.workbook.runtime import pick_device, seed_everything, setup_notebook
from peftlab.workbook.training import History, train
from peftlab.workbook.zoo import BASE_MODEL, load_base_model

__all__ = [
    "BASE_MODEL", "load_base_model", "load_corpus", "load_task", "PromptTargetCollator", "train", "History",
    "evaluate", "perplexity", "label_accuracy", "exact_match", "fact_recall", "fact_recall_by_rank",
    "parameter_counts", "memory_breakdown", "pick_device", "seed_everything", "setup_notebook",
]
