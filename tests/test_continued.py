"""Vocabulary expansion: old ids kept, the base's encodings kept where no new token applies,
fewer tokens per character, embeddings initialised as documented; continued pretraining (LoRA)
trains the new rows and saves a loadable model."""
import json

import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaTokenizerFast

from conftest import run_fails, run_ok
from workflow_scripts.lib.training.model_presets import build_model

pytestmark = pytest.mark.slow
UNTOUCHED = ["Hello, world! 1234 tokens per second.", "def f(x):\n    return x ** 2\n", "¿Qué tal? ünïcödé ✓"]


@pytest.fixture(scope="module")
def base(trained, tmp_path_factory):
    """The "existing model": a small Llama with this project's 800-token tokenizer, random weights."""
    tokenizer_dir, _ = trained
    out = tmp_path_factory.mktemp("base") / "model"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = build_model("demo", tokenizer, seq_len=64, tie_embeddings=False, attention="sdpa")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_style_base(demo_docs, tmp_path_factory):
    """A base laid out like LLaMA-2's (the Chinese-LLaMA-Alpaca case): SentencePiece-style BPE with
    "▁" for spaces, byte fallback through <0x00>..<0xFF> vocabulary tokens at ids 3-258, merges
    written as "left right" strings on disk, few Han characters. Random weights."""
    out = tmp_path_factory.mktemp("llama_base") / "model"
    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    chinese = [doc["text"] for doc in pq.read_table(demo_docs, columns=["text"]).to_pylist()[:10]]
    bpe.train_from_iterator([*UNTOUCHED, "the quick brown fox jumps over the lazy dog"] * 50 + chinese,
                            trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
                                                limit_alphabet=150))
    spec = json.loads(bpe.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in byte_tokens]
    LlamaTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>", eos_token="</s>",
                       unk_token="<unk>", legacy=False).save_pretrained(out)
    spec["model"]["merges"] = [" ".join(pair) for pair in spec["model"]["merges"]]
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    build_model("demo", tokenizer, seq_len=64, tie_embeddings=True, attention="sdpa").save_pretrained(out)
    return out


def expand(tmp_path, base, demo_docs, init):
    out, report = tmp_path / f"expanded-{init}", tmp_path / f"report-{init}.json"
    run_ok("continued.expand_vocab", "--base", base, "--train", demo_docs, "--validation", demo_docs, "--vocab-size",
           2000,
           "--init", init, "--out", out, "--report", report)
    return out, json.loads(report.read_text())


@pytest.fixture(scope="module")
def expanded(base, demo_docs, tmp_path_factory):
    return expand(tmp_path_factory.mktemp("expanded"), base, demo_docs, "subtoken_mean")


def test_old_tokens_keep_their_ids_and_text_without_new_tokens_encodes_the_same(base, expanded):
    old, new = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(expanded[0])
    new_vocab = new.get_vocab()
    assert all(new_vocab[token] == token_id for token, token_id in old.get_vocab().items())
    assert len(new) == expanded[1]["expanded_vocab"] > len(old) + 500
    for text in UNTOUCHED:
        assert new(text)["input_ids"] == old(text)["input_ids"], text
    assert new.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False) == \
        old.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False)


def test_a_llama_style_byte_fallback_base_expands_the_same_way(llama_style_base, demo_docs, tmp_path):
    out, report = expand(tmp_path, llama_style_base, demo_docs, "subtoken_mean")
    old, new = AutoTokenizer.from_pretrained(llama_style_base), AutoTokenizer.from_pretrained(out)
    assert all(new.get_vocab()[token] == token_id for token, token_id in old.get_vocab().items())
    assert new.convert_ids_to_tokens(3) == "<0x00>" and report["added_tokens"] > 500
    for text in UNTOUCHED:
        assert new(text)["input_ids"] == old(text)["input_ids"], text
    text = pq.read_table(demo_docs, columns=["text"]).column("text")[0].as_py()[:200]
    assert len(new(text)["input_ids"]) < len(old(text)["input_ids"]) / 2
    assert new.decode(new(text)["input_ids"], skip_special_tokens=True) == text
    assert report["validation"]["tokens_per_char_after"] < 0.5 * report["validation"]["tokens_per_char_before"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == report["embedding_rows"] >= len(new)


def test_chinese_text_takes_fewer_tokens_and_round_trips(base, expanded, demo_docs):
    old, new = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(expanded[0])
    text = "据旧志记载，当地农户每年春季采收菊花，晒干后销往各地。这座城市位于河流沿岸，人口约一百万。"
    assert len(new(text)["input_ids"]) < len(old(text)["input_ids"])
    assert new.decode(new(text)["input_ids"]) == text
    validation = expanded[1]["validation"]
    assert validation["tokens_per_char_after"] < 0.9 * validation["tokens_per_char_before"]


@pytest.mark.parametrize("init", ["subtoken_mean", "mean"])
def test_new_embedding_rows_start_as_documented(base, demo_docs, tmp_path, init):
    out, report = expand(tmp_path, base, demo_docs, init)
    old_model, new_model = (AutoModelForCausalLM.from_pretrained(p) for p in (base, out))
    old_tokenizer, new_tokenizer = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(out)
    rows = len(old_tokenizer)
    for layer in ("get_input_embeddings", "get_output_embeddings"):
        old_w, new_w = getattr(old_model, layer)().weight, getattr(new_model, layer)().weight
        assert new_w.shape[0] == report["embedding_rows"] and new_w.shape[0] % 64 == 0
        assert torch.equal(new_w[:rows], old_w[:rows])
        token = max((t for t in new_tokenizer.get_vocab() if new_tokenizer.get_vocab()[t] >= rows), key=len)
        token_id = new_tokenizer.convert_tokens_to_ids(token)
        pieces = [piece.id for piece in old_tokenizer.backend_tokenizer.model.tokenize(token)]
        expected = old_w[pieces].mean(0) if init == "subtoken_mean" else old_w[:rows].mean(0)
        assert len(pieces) >= 2 and torch.allclose(new_w[token_id], expected, atol=1e-6)


def test_a_base_that_is_not_a_model_is_one_line(tmp_path, demo_docs):
    run_fails("continued.expand_vocab", r"no config\.json\); set continued_pretrain\.base", "--base", tmp_path,
              "--train", demo_docs, "--validation", demo_docs, "--out", tmp_path / "o", "--report", tmp_path / "r.json")
