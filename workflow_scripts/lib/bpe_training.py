"""Byte-level BPE training for Chinese in bounded memory, as the tokenizer stage runs it and
benchmarks/tokenizer_memory.py measures it (why the training pre-tokenization differs from the
encoding one: the tokenizer stage's docstring)."""
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from workflow_scripts.lib.chatml import SPECIAL_TOKENS

PRE_TOKENIZATIONS = ("han-runs", "naive")


def encoding_pre_tokenizer():
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def training_pre_tokenizer(pre_tokenization, han_run_max):
    if pre_tokenization == "naive":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    short_run_or_pair = Regex(rf"(?<!\p{{Han}})\p{{Han}}{{1,{han_run_max}}}(?!\p{{Han}})|\p{{Han}}{{1,2}}")
    return pre_tokenizers.Sequence([pre_tokenizers.Split(short_run_or_pair, "isolated"), encoding_pre_tokenizer()])


def train(texts, vocab_size, pre_tokenization, han_run_max, min_frequency):
    """A trained `tokenizers.Tokenizer`; `naive` is GPT-2's ByteLevel setup, the benchmark's baseline."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = training_pre_tokenizer(pre_tokenization, han_run_max)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    if pre_tokenization != "naive":
        tokenizer.pre_tokenizer = encoding_pre_tokenizer()
    return tokenizer
