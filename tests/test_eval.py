"""Evaluation: bits per byte against a hand computation, the samples stage, the run summary."""
import json
import math
import shutil

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from conftest import run_fails, run_stage
from workflow_scripts.eval.bits_per_byte import metrics, score, windows
from workflow_scripts.lib.training.rewards import names_only
from workflow_scripts.eval.run_summary import html_page, tokenizer_page
from workflow_scripts.eval.samples import read_prompts
from workflow_scripts.lib.corpus.documents import DocWriter
from workflow_scripts.lib.serving.generation import DEFAULTS, generate_reply, sampling_settings
from workflow_scripts.lib.stage_cli import StageError

TEXTS = ["北京是中华人民共和国的首都，位于华北平原。", "Snakemake 把流程写成规则；每条规则只在输入改变时重跑。", "长江"]


@pytest.fixture(scope="module")
def tiny(trained, tmp_path_factory):
    """A randomly initialised Llama small enough to score token by token, saved with the tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(trained[0])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, tokenizer, out


def hand_nats(model, ids, window):
    """Sum of -log p(token | the tokens before it in its window), one forward pass per token."""
    total = 0.0
    with torch.no_grad():
        for position in range(1, len(ids)):
            start = (position - 1) // window * window
            logits = model(input_ids=torch.tensor([ids[start:position]])).logits[0, -1].double()
            total -= torch.log_softmax(logits, -1)[ids[position]].item()
    return total


@pytest.mark.parametrize("window", [128, 5])
def test_bits_per_byte_matches_a_hand_computation(tiny, window):
    model, tokenizer, _ = tiny
    eos = tokenizer.eos_token_id
    documents = [[eos, *tokenizer.encode(t, add_special_tokens=False), eos] for t in TEXTS]
    nats = sum(hand_nats(model, ids, window) for ids in documents)
    nbytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    result = metrics(score(model, tokenizer, TEXTS, window, batch_size=2))
    assert result["bytes"] == nbytes and result["tokens"] == sum(len(d) - 1 for d in documents)
    assert result["bits_per_byte"] == pytest.approx(nats / math.log(2) / nbytes, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nats / result["tokens"]), rel=1e-5)


def test_windows_predict_every_token_after_the_first_once():
    ids = list(range(23))
    pairs = list(windows(ids, 5))
    assert [t for _, t in pairs] == [ids[1:6], ids[6:11], ids[11:16], ids[16:21], ids[21:23]]
    assert all(inputs == ids[ids.index(t[0]) - 1:ids.index(t[-1])] for inputs, t in pairs)


def test_an_untrained_model_costs_about_log2_vocab_bits_per_token(tiny):
    """Units: an untrained model is near uniform, so bits per byte is near log2(vocab) / bytes per token
    (in nats, or per token, it would be far off)."""
    model, tokenizer, _ = tiny
    result = metrics(score(model, tokenizer, TEXTS, 128, 4))
    assert result["bits_per_byte"] == pytest.approx(math.log2(len(tokenizer)) / result["bytes_per_token"], rel=0.05)


def test_bits_per_byte_cli(tiny, tmp_path):
    _, _, model_dir = tiny
    with DocWriter(tmp_path / "validation.parquet") as writer:
        for n, text in enumerate(TEXTS):
            writer.write({"id": n, "title": str(n), "url": "", "text": text})
    out = tmp_path / "bpb.json"
    result = run_stage("eval.bits_per_byte", "--model", model_dir, "--text", tmp_path / "validation.parquet",
                       "--max-documents", 2, "--out", out)
    assert result.returncode == 0, result.stderr
    scored = json.loads(out.read_text())
    assert scored["documents"] == 2 and scored["seq_len"] == 128
    assert scored["bytes"] == sum(len(t.encode("utf-8")) for t in TEXTS[:2])
    assert scored["bits_per_byte"] == pytest.approx(scored["nats"] / math.log(2) / scored["bytes"])


def test_bits_per_byte_of_a_missing_model_is_one_line(tmp_path):
    result = run_stage("eval.bits_per_byte", "--model", tmp_path / "nothing", "--text", tmp_path / "v.parquet",
                       "--out", tmp_path / "bpb.json")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.endswith(f"bits_per_byte error: {tmp_path / 'nothing'}: not a model directory (no config.json); "
                         "build it with snakemake first")


def test_prompt_file_comments_and_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\n\n 北京在哪里？ \n  # indented comment\n写一首诗。\n", encoding="utf-8")
    assert read_prompts(path) == ["北京在哪里？", "写一首诗。"]
    path.write_text("# only comments\n\n")
    with pytest.raises(StageError, match="no prompts"):
        read_prompts(path)


def test_samples_are_greedy_and_repeatable(tiny, tmp_path):
    _, _, model_dir = tiny
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("北京在哪里？\n请介绍一下长江。\n", encoding="utf-8")
    runs = []
    for n, style in enumerate(("chat", "chat", "completion")):
        out, markdown = tmp_path / f"s{n}.json", tmp_path / f"s{n}.md"
        result = run_stage("eval.samples", "--model", model_dir, "--prompts", prompts, "--style", style,
                           "--max-new-tokens", 8, "--out", out, "--markdown", markdown)
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(out.read_text()))
        assert "请介绍一下长江。" in markdown.read_text(encoding="utf-8")
    assert [s["prompt"] for s in runs[0]["samples"]] == ["北京在哪里？", "请介绍一下长江。"]
    assert runs[0]["samples"] == runs[1]["samples"]
    assert runs[0]["decoding"] == {"greedy": True, "max_new_tokens": 8, "repetition_penalty": 1.1}
    assert runs[2]["style"] == "completion"


def test_samples_of_a_model_without_a_chat_template_skip_the_chat_checks(tiny, tmp_path):
    """An existing base model (continued pretraining) may have no chat template: its completion
    samples are written and its chat-format checks are left out, not failed."""
    model_dir = shutil.copytree(tiny[2], tmp_path / "model")
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("北京在哪里？\n", encoding="utf-8")
    result = run_stage("eval.samples", "--model", model_dir, "--prompts", prompts, "--style", "completion",
                       "--max-new-tokens", 8, "--out", tmp_path / "s.json", "--markdown", tmp_path / "s.md")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["chat_format"] is None
    assert "No chat template" in (tmp_path / "s.md").read_text(encoding="utf-8")


FACTS = [{"relation": "capital",
          "templates": {"lead": "{subject}的首都是{object}", "other": "{object}是{subject}的首都"},
          "question": "{subject}的首都是哪里？", "answer": "{subject}的首都是{object}。"},
         {"subject": "法国", "relation": "capital", "object": "巴黎", "candidates": ["巴黎", "柏林", "罗马", "马德里"]},
         {"subject": "德国", "relation": "capital", "object": "柏林", "candidates": ["巴黎", "柏林", "罗马"]},
         {"relation": "river", "templates": {"lead": "{subject}位于{object}沿岸"}},
         {"subject": "武汉", "relation": "river", "object": "长江", "candidates": ["长江", "黄河"]}]


def write_facts(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def hand_rank(model, prefix, candidate_ids, right):
    """The right candidate's rank by the summed log-probability of its ids after the prefix, each
    sequence scored by the model's own loss (labels) rather than the probe's code."""
    totals = []
    with torch.no_grad():
        for ids in candidate_ids:
            sequence = torch.tensor([prefix + ids])
            labels = torch.tensor([[-100] * len(prefix) + ids])
            totals.append(-model(input_ids=sequence, labels=labels).loss.item() * len(ids))
    return 1 + sum(t > totals[right] + 1e-4 for t in totals)


@pytest.mark.parametrize("style", ["completion", "chat"])
def test_the_fact_probe_ranks_candidates_as_a_hand_computation_does(tiny, tmp_path, style):
    model, tokenizer, model_dir = tiny
    out = tmp_path / "knowledge.json"
    result = run_stage("eval.knowledge", "--model", model_dir, "--facts", write_facts(tmp_path / "facts.jsonl", FACTS),
                       "--style", style, "--out", out, "--markdown", tmp_path / "knowledge.md")
    assert result.returncode == 0, result.stderr
    probe = json.loads(out.read_text())
    facts = [r for r in FACTS if "subject" in r]
    relations = {r["relation"]: r for r in FACTS if "templates" in r}
    expected, question_prefixes = {}, []
    for fact in facts:
        relation, right = relations[fact["relation"]], fact["candidates"].index(fact["object"])
        phrasings = {name: ([tokenizer.eos_token_id], template) for name, template in relation["templates"].items()}
        if "question" in relation:
            question = relation["question"].format(subject=fact["subject"])
            if style == "chat":
                prefix = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                       add_generation_prompt=True, return_dict=True)["input_ids"]
            else:
                prefix = [tokenizer.eos_token_id, *tokenizer.encode(question + "\n")]
            phrasings["question"] = (prefix, relation["answer"])
            question_prefixes.append((fact, prefix))
        for name, (prefix, template) in phrasings.items():
            candidate_ids = [tokenizer.encode(template.format(subject=fact["subject"], object=c))
                             for c in fact["candidates"]]
            expected.setdefault((fact["relation"], name), []).append(hand_rank(model, prefix, candidate_ids, right))
    for (relation, name), ranks in expected.items():
        scored = probe["relations"][relation][name]
        assert scored["mean_rank"] == pytest.approx(sum(ranks) / len(ranks))
        assert scored["accuracy"] == pytest.approx(sum(r == 1 for r in ranks) / len(ranks))
    assert probe["relations"]["capital"]["lead"]["chance"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert probe["overall"]["lead"]["facts"] == 3 and probe["overall"]["question"]["facts"] == 2
    assert probe["qa_accuracy"] == probe["overall"]["question"]["accuracy"]
    assert "| river | lead | 1 |" in (tmp_path / "knowledge.md").read_text()
    assert [a["reply"] for a in probe["generated"]] == [
        hand_greedy(model, tokenizer, prefix, relations[f["relation"]], f) for f, prefix in question_prefixes]


def hand_greedy(model, tokenizer, prefix, relation, fact):
    """The question's reply as the terminal chat gives it at temperature 0 (one request at a time, where
    the probe batches them): at most the longest answer's tokens plus 8."""
    longest = max(len(tokenizer.encode(relation["answer"].format(subject=fact["subject"], object=c)))
                  for c in fact["candidates"])
    settings = sampling_settings(tokenizer, 0, 1.0, longest + 8, DEFAULTS["repetition_penalty"])
    return generate_reply(model, tokenizer, prefix, settings, lambda _: None).text


@pytest.mark.parametrize("reply, right", [("法国的首都是巴黎。", True), ("巴黎，不是柏林", False), ("柏林", False),
                                          ("法國的首都是巴黎", True), ("罗马", False), ("我不知道", False)])
def test_a_generated_answer_is_right_when_it_names_the_object_and_no_other_candidate(reply, right):
    assert names_only(reply, "巴黎", ["巴黎", "柏林", "罗马"]) is right


@pytest.mark.parametrize("line, why", [
    ("{not json", r"line 2: not JSON"),
    ('{"subject": "法国", "relation": "capital", "object": "巴黎"}', r"line 2: a fact has subject, relation, object, "
                                                                   r"candidates; this record has subject, relation"),
    ('{"subject": "法国", "relation": "city", "object": "巴黎", "candidates": ["巴黎", "柏林"]}',
     r"line 2: relation 'city' is not defined on a line before it"),
    ('{"subject": "法国", "relation": "capital", "object": "巴黎", "candidates": ["柏林", "罗马"]}',
     r"line 2: candidates must list at least two distinct objects, the fact's object among them"),
    ('{"relation": "capital", "templates": {"lead": "{subject}的首都"}}',
     r"line 2: template 'lead' must hold \{subject\} and \{object\} once each"),
])
def test_a_bad_facts_line_is_one_line_naming_it(tmp_path, line, why):
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps(FACTS[0], ensure_ascii=False) + "\n" + line + "\n", encoding="utf-8")
    run_fails("eval.knowledge", f"{facts}: {why}", "--model", tmp_path / "no-model", "--facts", facts,
              "--style", "completion", "--out", tmp_path / "k.json", "--markdown", tmp_path / "k.md")


TOKENIZER_REPORT = {"vocab_size": 2048, "pre_tokenization": "han-runs", "han_run_max": 4, "training_seconds": 0.12,
                    "peak_rss_mb": 194.6, "validation": {"documents": 16, "characters": 8107, "bytes": 22535,
                                                         "tokens": 5359, "characters_per_token": 1.5128,
                                                         "bytes_per_token": 4.2051, "han_single_token_share": 0.8972,
                                                         "round_trip_exact": 1.0}}


@pytest.mark.parametrize("languages, present, absent", [
    (["zh"], ["分词器", "词表大小", "验证集"], ["Tokenizer", "vocab size", 'href="#']),
    (["en"], ["Tokenizer", "vocab size", "Validation split"], ["分词器", "词表大小", 'href="#']),
    (["zh", "en"], ['<a href="#zh">中文</a> · <a href="#en">English</a>', "分词器", "Tokenizer"], []),
])
def test_a_report_page_is_in_the_languages_eval_report_languages_names(languages, present, absent):
    page = html_page(languages, tokenizer_page(TOKENIZER_REPORT))
    assert all(text in page for text in present) and not any(text in page for text in absent)
    assert f'<html lang="{languages[0]}">' in page
    if len(languages) == 2:
        assert page.index('<section id="zh" lang="zh"><h1>分词器') < page.index('<section id="en" lang="en">')
