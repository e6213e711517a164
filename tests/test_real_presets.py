"""Rehearsal of the real recipe: config/presets/zhwiki.yaml, unchanged, plus one small overlay (a tiny
model, few steps, two shards, mirrors pointing at 127.0.0.1) runs `all` to the end. A server started
here lays out what the preset fetches as its hosts do: a zhwiki dump mirror (the real slice in
../shared/data/zhwiki, cut into a multistream dump with its index), the chat sets in their
distributed layouts (an Alpaca JSON array, BELLE's JSON lines) and the CMMLU and C-Eval zips
(dev/, test/ or val/, one CSV per subject)."""
import bz2
import csv
import hashlib
import html
import io
import json
import re

import pytest
import yaml

from conftest import REPO, SHARED_DATA, FileServer, copy_workflow, snakemake, zip_of

pytestmark = pytest.mark.slow
DUMP_NAME = "zhwiki-latest-pages-articles-multistream"
CMMLU = SHARED_DATA / "eval" / "cmmlu" / "data"
PAGES_PER_STREAM = 5
# C-Eval's subjects, laid out as its zip is, with CMMLU questions of a neighbouring subject (C-Eval
# itself is not in ../shared): {C-Eval name: CMMLU subject}.
CEVAL_SUBJECTS = {"computer_network": "computer_security", "logic": "logical"}
CMMLU_SUBJECTS = ["philosophy", "college_mathematics"]


def multistream(xml):
    """(dump, index) of a single-stream export cut as dumps.wikimedia.org cuts it: a header
    stream, streams of pages, a footer stream, and an index of offset:id:title."""
    pages = re.findall(r"  <page>.*?</page>\n", xml, re.S)
    chunks = [xml[:xml.index("  <page>")]] + ["".join(pages[k:k + PAGES_PER_STREAM])
                                             for k in range(0, len(pages), PAGES_PER_STREAM)] + ["</mediawiki>\n"]
    streams = [bz2.compress(chunk.encode()) for chunk in chunks]
    offsets = [sum(map(len, streams[:n])) for n in range(len(streams))]
    index = [f"{offsets[1 + k // PAGES_PER_STREAM]}:{page_field(page, 'id')}:{html.unescape(page_field(page, 'title'))}"
             for k, page in enumerate(pages)]
    return b"".join(streams), bz2.compress(("\n".join(index) + "\n").encode())


def page_field(page, tag):
    return re.search(f"<{tag}>(.*?)</{tag}>", page).group(1)


def dump_mirror():
    dump, index = multistream(bz2.decompress((SHARED_DATA / "zhwiki" / "zhwiki-test-pages.xml.bz2").read_bytes())
                              .decode())
    files = {f"{DUMP_NAME}.xml.bz2": dump, f"{DUMP_NAME}-index.txt.bz2": index}
    sums = "".join(f"{hashlib.sha1(data).hexdigest()}  zhwiki-latest-{name.split('-', 2)[2]}\n"
                   for name, data in files.items())
    files["zhwiki-latest-sha1sums.txt"] = sums.encode()
    return {f"/zhwiki/latest/{name}": data for name, data in files.items()}


def questions_in(subjects):
    return sum(len(list(csv.reader(io.StringIO((CMMLU / "test" / f"{subject}.csv").read_text(encoding="utf-8"))))) - 1
               for subject in subjects)


def csv_bytes(rows):
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def ceval_zip():
    """C-Eval's layout: {subject}_{split}.csv with an id,question,A-D,answer,explanation header; test/
    without answers."""
    members = {}
    for name, source in CEVAL_SUBJECTS.items():
        for split, cmmlu_split in (("dev", "dev"), ("val", "test"), ("test", "test")):
            rows = list(csv.reader(io.StringIO((CMMLU / cmmlu_split / f"{source}.csv").read_text(encoding="utf-8"))))
            header = ["id", "question", "A", "B", "C", "D"] + (["answer", "explanation"] if split != "test" else [])
            body = [[row[0], *row[1:6]] + ([row[6], ""] if split != "test" else []) for row in rows[1:]]
            members[f"{split}/{name}_{split}.csv"] = csv_bytes([header, *body])
    return zip_of(members)


def cmmlu_zip():
    return zip_of({f"{split}/{subject}.csv": (CMMLU / split / f"{subject}.csv").read_bytes()
                   for split in ("dev", "test") for subject in CMMLU_SUBJECTS})


def belle_jsonl():
    """BELLE's layout (JSON lines of instruction, input, output), with one malformed record, which
    the preset skips (sft.skip_bad_records) rather than stopping the run after the download."""
    records = [record for record in json.loads((SHARED_DATA / "sft" / "alpaca_zh_10k.json").read_text(encoding="utf-8"))
               if record["output"].strip()][:500]
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    lines.insert(100, '{"instruction": "未写完的记录", "output": ')
    return ("\n".join(lines) + "\n").encode()


def hub_files():
    """The preset's URLs, under the path each has on the Hub."""
    preset = yaml.safe_load((REPO / "config/presets/zhwiki.yaml").read_text())
    urls = [entry["url"] for entry in preset["sft"]["data"] + preset["eval"]["multiple_choice"]]
    content = {"alpaca_gpt4_data_zh.json": (SHARED_DATA / "sft" / "alpaca_zh_demo.json").read_bytes(),
               "Belle_open_source_0.5M.json": belle_jsonl(), "cmmlu_v1_0_1.zip": cmmlu_zip(),
               "ceval-exam.zip": ceval_zip()}
    return {url.removeprefix("https://huggingface.co"): content[url.rsplit("/", 1)[1]] for url in urls}


def overlay(mirror):
    return {"download": {"mirror": mirror},
            "fetch": {"mirrors": {"https://huggingface.co": mirror}},
            "extract": {"shards": 2}, "tokens": {"shards": 2}, "split": {"validation_fraction": 0.2},
            "tokenizer": {"vocab_size": 2000},
            "pretrain": {"preset": "demo", "gpus": 0, "seq_len": 256, "micro_batch": 4, "global_batch_tokens": 2048,
                         "max_steps": 12, "warmup_steps": 2, "eval_every": 6, "eval_windows": 8, "checkpoint_every": 6},
            "sft": {"gpus": 0, "max_len": 256, "batch_tokens": 2048, "epochs": 0, "max_steps": 8, "warmup_steps": 2,
                    "eval_every": 4, "checkpoint_every": 4},
            "eval": {"max_new_tokens": 8, "shots": [5], "scoring": ["letter"]}}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("real"))
    with FileServer.running({**dump_mirror(), **hub_files()}) as server:
        (workdir / "rehearsal.yaml").write_text(yaml.safe_dump(overlay(server.mirror)))
        snakemake(workdir, "all", "--configfile", "config.yaml", "config/presets/zhwiki.yaml", "rehearsal.yaml")
    return workdir


def test_the_zhwiki_preset_runs_from_the_dump_to_scores_on_both_benchmarks(rehearsal):
    rows = {(row["section"], row["measure"]): row["value"]
            for row in json.loads((rehearsal / "results/summary.json").read_text())}
    scored = {"cmmlu": questions_in(CMMLU_SUBJECTS), "ceval": questions_in(CEVAL_SUBJECTS.values())}
    for model in ("base_model", "sft_model"):
        for name, questions in scored.items():
            result = json.loads((rehearsal / f"results/eval/{model}/mc-{name}.json").read_text())
            five_shot = next(r for r in result["results"] if (r["shots"], r["scoring"]) == (5, "letter"))
            # 5 CMMLU shots do not fit the rehearsal's 256-token context: whole shots go, and are counted.
            assert five_shot["prompts_shortened"] > 0 and five_shot["questions"] + five_shot["too_long"] == questions
            assert 0 <= five_shot["overall"] <= 1
            measure = next(m for s, m in rows if s == model and m.startswith(f"{name} 5-shot letter accuracy"))
            assert f"{five_shot['prompts_shortened']} prompts cut to fewer shots to fit the model's context" in measure
    chats = json.loads((rehearsal / "results/chat_data/sft.json").read_text())
    belle = next(counts for path, counts in chats["files"].items() if path.endswith("Belle_open_source_0.5M.json"))
    assert belle["records"] == 500 and belle["skipped_bad"] == 1
    ceval = json.loads((rehearsal / "results/eval/base_model/mc-ceval.json").read_text())
    assert set(ceval["results"][0]["subjects"]) == set(CEVAL_SUBJECTS) and ceval["split"] == "val"
