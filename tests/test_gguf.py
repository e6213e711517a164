"""The GGUF export (rules gguf_file, ollama_modelfile), proven in a real llama.cpp: node-llama-cpp's
prebuilt CPU build (benchmarks/llama_cpp_runtime.py), on the demo's exported models."""
import json
import os
import re
import shutil
import sys

import pyarrow.parquet as pq
import pytest
import torch

from conftest import REPO, run_fails, snakemake
from workflow_scripts.eval.samples import read_prompts
from workflow_scripts.export.ollama_modelfile import CHATML_TEMPLATE
from workflow_scripts.lib.serving.generation import chat_prompt_ids
from workflow_scripts.lib.training.models import load_causal_lm

sys.path.insert(0, str(REPO / "benchmarks"))
import llama_cpp_runtime  # noqa: E402

pytestmark = pytest.mark.slow
MIXED = ["北京是中华人民共和国的首都。Beijing is the capital of China.", "2024年3月15日，气温12.5°C，湿度85%",
         "第１２３号：全角数字１２３，ＡＢＣ，“引号”与『括号』！？", "emoji 😀🎉 和 🇨🇳 表情",
         "  leading  and trailing spaces  ",
         "tabs\tand\nnew\n\nlines\r\n", "x=1+2; y = [3,4]; print(f'{x}{y}')", "I'm, you're, they'll — 'quoted' 's",
         "<|im_start|>user\n你好<|im_end|>\n", "日本語のテキストと한국어", "123456789012345", "。。。！！！？？？……"]


@pytest.fixture(scope="module")
def exported(built):
    """The demo's `snakemake gguf`: its results/export folder."""
    snakemake(built, "gguf")
    return built / "results" / "export"


@pytest.fixture(scope="module")
def llama_cpp():
    try:
        llama_cpp_runtime.install()
    except llama_cpp_runtime.RuntimeMissing as err:
        if os.environ.get("REQUIRE_LLAMA_CPP"):
            raise
        pytest.skip(str(err))
    return llama_cpp_runtime.ask


@pytest.fixture(scope="module")
def sft(built):
    return load_causal_lm(built / "results" / "sft_model")


def chat_prompts(tokenizer, count=5):
    questions = read_prompts(REPO / "demo" / "eval" / "prompts.txt")[:count]
    return [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in questions]


def test_gguf_writes_each_built_model_in_each_type_and_a_modelfile_and_reruns_nothing(exported, built):
    for model in ("base_model", "sft_model"):
        for kind, weights in (("f16", "F16"), ("q8_0", "Q8_0")):
            stats = json.loads((exported / f"{model}-{kind}.json").read_text())
            assert stats["bytes"] == (exported / f"{model}-{kind}.gguf").stat().st_size
            assert stats["tensors_by_type"] == {weights: 15, "F32": 5}, stats  # 2 layers x 7 matrices + embedding
    assert not (exported / "dpo_model-f16.gguf").exists()  # DPO is off in the demo
    assert "FROM ./sft_model-q8_0.gguf" in (exported / "Modelfile").read_text()
    assert "Nothing to be done" in snakemake(built, "gguf", "-n").stdout


def test_llama_cpp_tokenizes_every_corpus_document_and_mixed_text_as_the_tokenizer_does(exported, built,
                                                                                        llama_cpp, sft):
    _, tokenizer = sft
    texts = [text for split in ("train", "validation")
             for text in pq.read_table(built / "results" / "corpus" / f"{split}.parquet").column("text").to_pylist()]
    texts += MIXED
    ids = llama_cpp({"model": str(exported / "sft_model-f16.gguf"), "tokenize": texts})["tokenize"]
    mismatched = [n for n, text in enumerate(texts) if ids[n] != tokenizer.encode(text, add_special_tokens=False)]
    assert len(texts) > 100 and not mismatched, [texts[n][:60] for n in mismatched]


def test_the_f16_file_gives_transformers_logits_and_greedy_replies(exported, llama_cpp, sft):
    model, tokenizer = sft
    prompts = chat_prompts(tokenizer)
    answer = llama_cpp({"model": str(exported / "sft_model-f16.gguf"), "threads": 1, "logits": prompts,
                        "greedy": {"prompts": prompts, "tokens": 32}})
    q8 = llama_cpp({"model": str(exported / "sft_model-q8_0.gguf"), "threads": 1, "logits": prompts})["logits"]
    same_replies, q8_top1 = 0, 0
    with torch.no_grad():
        for n, ids in enumerate(prompts):
            logits = model(torch.tensor([ids])).logits[0, -1]
            assert (torch.tensor(answer["logits"][n]) - logits).abs().max() < 0.02 * logits.abs().max()
            reply = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
            same_replies += reply == answer["greedy"][n]
            q8_top1 += int(torch.tensor(q8[n]).argmax()) == int(logits.argmax())
    print(f"greedy replies identical: {same_replies}/5; Q8_0 top-1 agreement: {q8_top1}/5")
    assert same_replies >= 4
    assert q8_top1 >= 4


def test_a_chatml_conversation_through_the_files_template_stops_at_im_end(exported, llama_cpp):
    reply = llama_cpp({"model": str(exported / "sft_model-q8_0.gguf"), "threads": 1, "chat": {
        "messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
                     {"role": "user", "content": "介绍一下首都。"}], "max_tokens": 128}})["chat"]
    assert reply["wrapper"] == "ChatML"
    assert reply["stop_reason"] == "eogToken" and reply["text"].strip(), reply


def test_export_refuses_a_tokenizer_llama_cpp_would_not_reproduce(built, tmp_path):
    model = shutil.copytree(built / "results" / "sft_model", tmp_path / "model")
    spec = json.loads((model / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = spec["pre_tokenizer"]["pretokenizers"][1]  # GPT-2's regex alone: digits in runs
    (model / "tokenizer.json").write_text(json.dumps(spec))
    run_fails("export.export_gguf", r"tokenizer.json: llama.cpp would tokenize it differently \(pre-tokenizer",
              "--model", model, "--type", "f16", "--out", tmp_path / "m.gguf", "--stats", tmp_path / "m.json")
    assert not (tmp_path / "m.gguf").exists()


def test_export_refuses_a_model_that_is_not_plain_llama(built, tmp_path):
    model = shutil.copytree(built / "results" / "sft_model", tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "attention_bias": True}))  # Qwen2's layout
    run_fails("export.export_gguf",
              r"model: a llama model \(rope default, attention_bias\); export writes plain LLaMA models",
              "--model", model, "--type", "q8_0", "--out", tmp_path / "m.gguf", "--stats", tmp_path / "m.json")


def modelfile_instructions(text):
    """(instruction, argument) pairs as Ollama's parser reads them: one per line, \"\"\" quoting many."""
    pairs = []
    for match in re.finditer(r'^(\w+)[ \t]+(?:"""(.*?)"""|([^\n]*))$', re.sub(r"^#.*\n", "", text, flags=re.M),
                             re.M | re.S):
        pairs.append((match[1].upper(), match[2] if match[2] is not None else match[3]))
    return pairs


def rendered(template, messages):
    """Ollama's template over `messages`: the {{ range .Messages }} block once per message."""
    head, rest = template.split("{{- range .Messages }}")
    block, tail = rest.split("{{ end }}")
    turns = "".join(block.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"]) for m in messages)
    return head + turns + tail


def test_the_modelfile_parses_and_its_template_writes_the_models_chat_prompt(exported, sft):
    _, tokenizer = sft
    instructions = modelfile_instructions((exported / "Modelfile").read_text())
    assert {name for name, _ in instructions} == {"FROM", "TEMPLATE", "PARAMETER"}
    assert (exported / dict(instructions)["FROM"].removeprefix("./")).is_file()
    parameters = [argument.split(" ", 1) for name, argument in instructions if name == "PARAMETER"]
    assert {name for name, _ in parameters} == {"stop", "temperature", "top_p", "repeat_penalty", "num_ctx",
                                                "num_predict"}
    assert {value for name, value in parameters if name == "stop"} >= {'"<|im_end|>"'}
    template = dict(instructions)["TEMPLATE"]
    assert template == CHATML_TEMPLATE
    messages = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好！"}, {"role": "user", "content": "北京在哪里？"}]
    assert rendered(template, messages) == tokenizer.apply_chat_template(messages, tokenize=False,
                                                                         add_generation_prompt=True)
