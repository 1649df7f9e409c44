"""A word-level tokenizer for the bundled corpus, saved in the `transformers` format.

The corpus is generated with spaces around every word and punctuation mark, so splitting on
whitespace *is* the tokenization: one token per word, a vocabulary of about a thousand, and
token ids a learner can read. `AutoTokenizer.from_pretrained(folder)` loads it like any other.
"""
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def build_tokenizer(texts: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """Vocabulary = special tokens, then every distinct word in `texts`, sorted (deterministic)."""
    words = sorted({w for text in texts for w in text.split()})
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Every encoded text starts with <bos>, as in Llama; generation then starts from it too.
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="right",
                                   model_max_length=max_length)
