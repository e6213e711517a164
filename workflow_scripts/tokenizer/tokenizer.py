"""Train a byte-level BPE tokenizer for Chinese on the train split, in bounded memory.

    python -m workflow_scripts.tokenizer.tokenizer --train corpus/train.parquet --validation corpus/validation.parquet \
        --vocab-size 32000 --out tokenizer/ --report tokenizer_report.json

Why the pre-tokenization differs from GPT-2's: the ByteLevel regex keeps a whole run of Han
characters (a clause, up to the next punctuation) as one pre-token, and the `tokenizers` BPE
trainer keeps every distinct pre-token with ~60 bytes of bookkeeping per UTF-8 byte. Chinese
clauses are nearly all distinct, so memory grows with the corpus (48-60 GB reported for 2 GB of
zhwiki). For training only, this stage keeps a Han run whole when it stands alone and has at most
--han-run-max characters (names, words, short phrases: a set that stops growing), and cuts longer
runs into pieces of two characters, whose set is bounded by the Han bigrams. On 38 MB of real
novels that takes 43% of the naive trainer's peak memory at 1.8% fewer characters per token
(benchmarks/results/tokenizer_memory.md). The saved tokenizer encodes with the plain ByteLevel
regex, so merges learned inside pieces also apply across their boundaries. Digits are split one
by one. decode(encode(x)) == x for every string: there is no unknown token.

The output directory loads with `AutoTokenizer.from_pretrained` and carries a ChatML chat
template in tokenizer_config.json (`{% generation %}` marks assistant turns for loss masks).
"""
import time
import unicodedata
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from workflow_scripts.lib.atomic_files import atomic_dir, read_json, write_json
from workflow_scripts.lib.bpe_training import train
from workflow_scripts.lib.chatml import CHAT_TEMPLATE, END_OF_TEXT, IM_END, IM_START, PAD, SPECIAL_TOKENS
from workflow_scripts.lib.corpus.documents import capped_texts, read_docs
from workflow_scripts.lib.settings import add_settings, definitions
from workflow_scripts.lib.stage_cli import StageError, log, peak_rss_mb, stage_cli


def save_hf(tokenizer, out_dir, model_max_length):
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE, model_max_length=model_max_length,
                                   additional_special_tokens=[IM_START, IM_END])
    # The template goes into tokenizer_config.json (not chat_template.jinja) so that older
    # transformers releases and other tools that only read the config see it too.
    fast.save_pretrained(out_dir, save_jinja_files=False)
    # transformers 5 records its own class name, which 4.x cannot load; this one both load.
    config_path = Path(out_dir, "tokenizer_config.json")
    write_json(config_path, {**read_json(config_path), "tokenizer_class": "PreTrainedTokenizerFast"})


def is_han(char):
    return unicodedata.name(char, "").startswith("CJK")


def validation_report(tokenizer, docs):
    """Compression, Han coverage and exact round trip on every validation document."""
    documents = chars = nbytes = tokens = han = han_single = 0
    single = {}
    for doc in docs:
        documents += 1
        text = doc["text"]
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if tokenizer.decode(ids, skip_special_tokens=False) != text:
            raise StageError(f"validation document id={doc['id']} ({doc['title']!r}) does not decode back to itself")
        chars, nbytes, tokens = chars + len(text), nbytes + len(text.encode()), tokens + len(ids)
        for char in text:
            if is_han(char):
                if char not in single:
                    single[char] = len(tokenizer.encode(char, add_special_tokens=False).ids) == 1
                han += 1
                han_single += single[char]
    if not tokens:
        raise StageError("the validation split is empty; raise split.validation_fraction in config.yaml")
    return {"documents": documents, "characters": chars, "bytes": nbytes, "tokens": tokens,
            "characters_per_token": round(chars / tokens, 4), "bytes_per_token": round(nbytes / tokens, 4),
            "han_single_token_share": round(han_single / max(1, han), 4), "round_trip_exact": 1.0}


def add_arguments(ap):
    ap.add_argument("--train", type=Path, required=True, help="train split (Parquet, DOC_SCHEMA)")
    ap.add_argument("--validation", type=Path, required=True)
    add_settings(ap, "tokenizer", *definitions("tokenizer"))
    ap.add_argument("--out", type=Path, required=True, help="Hugging Face tokenizer directory")
    ap.add_argument("--report", type=Path, required=True)


def run(args, progress_stream):
    if args.vocab_size < 256 + len(SPECIAL_TOKENS):
        raise StageError(f"tokenizer.vocab_size {args.vocab_size} is below the 256 bytes plus special tokens")
    started = time.monotonic()
    tokenizer = train(capped_texts(args.train, args.max_chars), args.vocab_size, args.pre_tokenization,
                      args.han_run_max, args.min_frequency)
    seconds, rss = time.monotonic() - started, peak_rss_mb()
    log.info("trained %d tokens in %.1f s, peak RSS %.0f MB", tokenizer.get_vocab_size(), seconds, rss)
    report = {"vocab_size": tokenizer.get_vocab_size(), "pre_tokenization": args.pre_tokenization,
              "han_run_max": args.han_run_max, "training_seconds": round(seconds, 2), "peak_rss_mb": rss,
              "validation": validation_report(tokenizer, read_docs([args.validation]))}
    with atomic_dir(args.out) as tmp:
        save_hf(tokenizer, tmp, args.model_max_length)
    write_json(args.report, report)
    log.info("%s", report)


if __name__ == "__main__":
    stage_cli("tokenizer", __doc__, add_arguments, run)
