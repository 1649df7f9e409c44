"""Pretrain a bundled base model on the bundled corpus: `python -m peftlab.workbook.pretrain`.

Documents are packed into fixed-length blocks (<bos> doc <eos> <bos> doc <eos> ...) and the
model learns next-token prediction on every position, with the same training loop the
notebooks use. At the end it measures what the model card reports, writes the model card, and
refreshes the data manifest.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM

from peftlab.workbook import evaluate
from peftlab.workbook.data import COUNTRIES, LABEL_WORDS, load_corpus, load_task
from peftlab.workbook.data.manifest import write_manifest
from peftlab.workbook.runtime import seed_everything
from peftlab.workbook.tokenizer import build_tokenizer
from peftlab.workbook.training import train
from peftlab.workbook.zoo import ARCHITECTURES, MODELS_DIR, model_config

# How each family reads in a model card.
STYLE = {"llama": "Llama-style", "gpt2": "GPT-2-style"}
LAYOUT = {
    "llama": "`LlamaForCausalLM` (RMSNorm, rotary positions, SwiGLU, grouped-query attention, tied embeddings)",
    "gpt2": "`GPT2LMHeadModel` (LayerNorm, learned positions, GELU MLP, a bias in every linear and norm layer, "
            "tied embeddings)",
}


def pack(token_lists: list[list[int]], block: int) -> torch.Tensor:
    """Concatenate token lists and cut the stream into rows of `block` tokens (remainder dropped)."""
    stream = torch.tensor([t for ids in token_lists for t in ids])
    n = len(stream) // block
    return stream[:n * block].view(n, block)


def collate_blocks(rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    ids = torch.stack(rows)
    return {"input_ids": ids, "labels": ids}   # the model shifts labels itself


def measure(model, tokenizer, heldout_texts: list[str]) -> dict:
    """The figures of the model card (also asserted by the tests)."""
    sentiment, capitals = load_task("sentiment"), load_task("capitals")
    probe_rows = [r for split in capitals.values() for r in split]
    return {
        "heldout_perplexity": round(evaluate.perplexity(model, tokenizer, heldout_texts), 3),
        "fact_recall": round(evaluate.fact_recall(model, tokenizer), 3),
        "probe_zero_shot": round(evaluate.exact_match(model, tokenizer, probe_rows), 3),
        "sentiment_zero_shot": round(evaluate.label_accuracy(model, tokenizer, sentiment["test"], LABEL_WORDS), 3),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="pico-llama-1m")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the saved weights; the model card's figures are measured "
                             "on the weights as saved")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    corpus = load_corpus()
    train_texts, heldout_texts = list(corpus["train"]["text"]), list(corpus["heldout"]["text"])
    tokenizer = build_tokenizer(train_texts, max_length=256)
    ids = tokenizer(train_texts)["input_ids"]
    blocks = pack([x + [tokenizer.eos_token_id] for x in ids], args.block)

    model = AutoModelForCausalLM.from_config(model_config(args.name, len(tokenizer), tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.name}: {n_params:,} parameters, vocabulary {len(tokenizer)}, "
          f"{blocks.numel():,} corpus tokens in {len(blocks)} blocks")
    started = time.strftime("%Y-%m-%d")
    history = train(model, list(blocks), collate_blocks, steps=args.steps, lr=args.lr,
                    batch_size=args.batch_size, warmup=0.05, schedule="cosine",
                    weight_decay=0.01, seed=args.seed, device="cpu", desc="pretraining")
    save_dtype = getattr(torch, args.save_dtype)
    # Round to the saved dtype first, so the card describes exactly what loads from disk.
    model = model.to(save_dtype).to(torch.float32)
    figures = measure(model, tokenizer, heldout_texts)
    print(json.dumps(figures))

    out = MODELS_DIR / args.name
    model.to(save_dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    facts = {"name": args.name, "family": ARCHITECTURES[args.name][0], "parameters": n_params, "vocabulary": len(tokenizer),
             "corpus_tokens": int(blocks.numel()), "steps": args.steps, "batch_size": args.batch_size,
             "block": args.block, "tokens_seen": args.steps * args.batch_size * args.block,
             "lr": args.lr, "seed": args.seed, "threads": args.threads, "saved_dtype": args.save_dtype,
             "train_seconds": round(history.seconds), "final_train_loss": round(history.loss[-1], 3),
             "date": started, "torch": torch.__version__, **figures}
    (out / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    (out / "README.md").write_text(model_card(facts))
    write_manifest()
    print(f"saved to {out}")


def model_card(f: dict) -> str:
    family = f.get("family", "llama")
    return f"""# {f['name']}

A tiny {STYLE[family]} causal language model, pretrained from scratch by `python -m peftlab.workbook.pretrain
--name {f['name']}` on peftlab's bundled corpus (`data/corpus/train.jsonl`: short stories, fact
paragraphs about {len(COUNTRIES)} countries, plain statements). It exists so that every notebook can fine-tune a
real `transformers` model offline, in seconds, on a laptop CPU.

| | |
|---|---|
| architecture | {LAYOUT[family]} |
| parameters | {f['parameters']:,} |
| vocabulary | {f['vocabulary']} word-level tokens (`tokenizer.json`) |
| data | {f['corpus_tokens']:,} corpus tokens, packed in blocks of {f['block']} |
| training | {f['steps']} steps x {f['batch_size']} x {f['block']} tokens = {f['tokens_seen']:,} tokens (about {f['tokens_seen'] / f['corpus_tokens']:.1f} epochs); AdamW, lr {f['lr']}, cosine, seed {f['seed']} |
| weights | stored as {f.get('saved_dtype', 'float32')}; `from_pretrained(..., dtype=torch.float32)` gives exactly these values in float32 |
| time | {f['train_seconds']} s on {f['threads']} CPU threads (torch {f['torch']}, {f['date']}) |
| final training loss | {f['final_train_loss']} |
| held-out perplexity | {f['heldout_perplexity']} (`data/corpus/heldout.jsonl`) |
| fact recall | {f['fact_recall']:.1%} ("The capital of X is" -> every word of the capital, greedy) |
| capitals probe, zero-shot | {f['probe_zero_shot']:.1%} ("question : capital of X ? answer :", a template never seen in pretraining) |
| sentiment, zero-shot | {f['sentiment_zero_shot']:.1%} (label words "positive"/"negative"; chance is 50%) |

All figures come from `training.json`, written by the same run. Load it with
`AutoModelForCausalLM.from_pretrained("{f['name']}'s folder")` or `peftlab.workbook.load_base_model("{f['name']}")`.
Re-running the script on another machine gives a model of the same quality; bit-identical weights
need the same torch version and thread count.
"""


if __name__ == "__main__":
    main()
