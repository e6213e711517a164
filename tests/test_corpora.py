"""Extra corpora: ingest of each format (and of real novel chapters), one-line errors on bad
records, dedup across corpora in config order, and the train-split weights."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, chinese, read, run_dedup, run_fails, run_ok, write_docs
from workflow_scripts.data.split import train_copies
from workflow_scripts.lib.corpus.documents import EXTRA_ID_BASE, extra_doc_id

NOVELS = REPO.parent / "shared" / "data" / "pretrain_text" / "chinese-novels"


def ingest(tmp_path, name, files, *options, shard=0, shards=1):
    out = tmp_path / f"{name}-{shard}.parquet"
    run_ok("data.ingest", "--name", name, "--files", *files, *options, "--shard", shard, "--shards", shards,
           "--out", out, "--stats", tmp_path / f"{name}-{shard}.json")
    return read(out), json.loads((tmp_path / f"{name}-{shard}.json").read_text())


def test_ingest_reads_each_format_into_the_document_schema(tmp_path):
    lines = [{"subject": "甲", "body": "第一篇"}, {"body": "第二篇"}, {"subject": "空", "body": "  "}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    pq.write_table(pa.table({"body": ["第四篇"], "subject": ["丁"]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text("第一段\n\n第二段\n", encoding="utf-8")
    files = [tmp_path / "a.jsonl", tmp_path / "b.parquet", tmp_path / "c.txt"]
    docs, stats = ingest(tmp_path, "forum", files, "--text-field", "body", "--title-field", "subject",
                         "--txt-document", "paragraph")
    assert [(d["title"], d["text"], d["source"]) for d in docs] == [
        ("甲", "第一篇", "forum"), ("forum #1", "第二篇", "forum"), ("丁", "第四篇", "forum"),
        ("c #1", "第一段", "forum"), ("c #2", "第二段\n", "forum")]
    assert [d["id"] for d in docs] == [extra_doc_id("forum", n) for n in (0, 1, 3, 4, 5)]
    assert all(d["id"] > EXTRA_ID_BASE for d in docs)
    assert stats["records"] == 6 and stats["dropped"] == {"empty": 1} and stats["documents"] == 5


def test_ingest_shards_partition_the_records_with_the_same_ids(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"第{n}篇"}) + "\n" for n in range(10)))
    pq.write_table(pa.table({"text": [f"第{n}行" for n in range(7)]}), tmp_path / "b.parquet", row_group_size=3)
    files = [tmp_path / "a.jsonl", tmp_path / "b.parquet"]
    whole, _ = ingest(tmp_path, "one", files)
    parts = [ingest(tmp_path, "one", files, shard=k, shards=3)[0] for k in range(3)]
    assert sorted((d["id"], d["url"], d["text"]) for part in parts for d in part) == \
        sorted((d["id"], d["url"], d["text"]) for d in whole)
    assert [len(part) for part in parts] == [6, 6, 5]
    assert whole[-1]["url"].endswith("b.parquet#row7") and whole[-1]["id"] == extra_doc_id("one", 16)


def test_a_shard_decodes_only_its_own_records(tmp_path):
    """Record 1 is broken: shard 1 of 2 reports it; shard 0 never parses it (nor reads b.txt)."""
    (tmp_path / "a.jsonl").write_text('{"text": "好"}\n{"text": \n{"text": "三"}\n')
    pq.write_table(pa.table({"text": ["四", "五"]}), tmp_path / "a.parquet")
    (tmp_path / "b.txt").write_bytes("七".encode("gb18030"))
    files = [tmp_path / "a.jsonl", tmp_path / "a.parquet", tmp_path / "b.txt"]
    docs, stats = ingest(tmp_path, "x", files, shard=0, shards=2)
    assert [(d["id"], d["text"]) for d in docs] == [(extra_doc_id("x", n), text)
                                                    for n, text in ((0, "好"), (2, "三"), (4, "五"))]
    assert stats["records"] == 3
    run_fails("data.ingest", r"a\.jsonl:2: not valid JSON", "--name", "x", "--files", *files, "--shard", 1,
              "--shards", 2,
              "--out", tmp_path / "o.parquet", "--stats", tmp_path / "s.json")


@pytest.mark.parametrize("content, expected", [
    ('{"text": "好"}\n{"text": "坏"\n', r"a\.jsonl:2: not valid JSON"),
    ('{"body": "好"}\n', r"a\.jsonl:1: no string field 'text' \(has \['body'\]\); set this corpus's text_field"),
    ('["好"]\n', r"a\.jsonl:1: no string field 'text' \(has list\)"),
])
def test_a_bad_jsonl_record_is_one_line_naming_file_line_and_field(tmp_path, content, expected):
    (tmp_path / "a.jsonl").write_text(content)
    run_fails("data.ingest", expected, "--name", "x", "--files", tmp_path / "a.jsonl", "--out", tmp_path / "o.parquet",
              "--stats", tmp_path / "s.json")
    assert not (tmp_path / "o.parquet").exists()


def test_other_bad_files_are_one_line_errors(tmp_path):
    pq.write_table(pa.table({"body": ["好"]}), tmp_path / "b.parquet")
    (tmp_path / "gbk.txt").write_bytes("中文".encode("gb18030"))
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "b.parquet").read_bytes()[:-20])
    for path, expected in ((tmp_path / "b.parquet", r"b\.parquet: no column 'text' \(has \['body'\]\)"),
                           (tmp_path / "cut.parquet", r"cut\.parquet: not a readable Parquet file .*; check the file "
                                                      "config corpora.extra names$"),
                           (tmp_path / "gbk.txt", r"gbk\.txt: not UTF-8 \(byte 0\); convert it")):
        run_fails("data.ingest", expected, "--name", "x", "--files", path, "--out", tmp_path / "o.parquet",
                  "--stats", tmp_path / "s.json")


def test_real_novel_chapters_ingest_and_the_padded_one_is_cleaned_away(tmp_path):
    """One real chapter is padded to 1.4M characters with repeats and U+00A0 (../shared/data)."""
    padded = NOVELS / "红楼梦-第五十回芦雪庵争联即景诗暖香坞雅制春灯谜.txt"
    chapters = sorted(NOVELS.glob("三国演义-第一回*.txt")) + sorted(NOVELS.glob("西游记-第一回*.txt")) + [padded]
    docs, stats = ingest(tmp_path, "novels", chapters)
    assert stats["documents"] == 3 and [d["title"] for d in docs][-1] == padded.stem
    out = tmp_path / "clean.parquet"
    run_ok("data.clean", "--input", tmp_path / "novels-0.parquet", "--out", out, "--stats", tmp_path / "clean.json")
    kept = read(out)
    assert [d["title"] for d in kept] == [p.stem for p in chapters[:2]]
    assert all("\xa0" not in d["text"] and "滚滚长江东逝水" in kept[0]["text"] for d in kept)
    assert sum(json.loads((tmp_path / "clean.json").read_text())["removed"].values()) == 1


def dedup_removed(tmp_path, corpus_order):
    text = chinese(7)
    docs = [[{"id": 5, "text": text, "source": "zhwiki"}, {"id": 6, "text": chinese(8), "source": "zhwiki"}],
            [{"id": extra_doc_id("book", 0), "text": text, "source": "book"}],
            [{"id": extra_doc_id("forum", 0), "text": text + "。", "source": "forum"}]]
    signatures = []
    for n, shard in enumerate(docs):
        write_docs(tmp_path / f"{n}.parquet", shard)
        signatures.append(tmp_path / f"{n}.npz")
        run_ok("data.minhash", "--input", tmp_path / f"{n}.parquet", "--out", signatures[-1])
    removed = run_dedup(tmp_path, signatures, corpus_order=corpus_order)
    return removed, json.loads((tmp_path / "dedup.json").read_text())["by_source"]


def test_dedup_keeps_the_copy_of_the_corpus_listed_first(tmp_path):
    removed, by_source = dedup_removed(tmp_path, ["zhwiki", "forum", "book"])
    assert {(r["source"], r["kind"], r["duplicate_of_source"]) for r in removed} == {
        ("book", "exact", "zhwiki"), ("forum", "near", "zhwiki")}
    assert by_source["zhwiki"] == {"documents_in": 2, "exact_duplicates": 0, "near_duplicates": 0, "documents_out": 2}
    removed, _ = dedup_removed(tmp_path, ["forum", "book", "zhwiki"])
    assert {(r["source"], r["kind"], r["duplicate_of_source"]) for r in removed} == {
        ("book", "near", "forum"), ("zhwiki", "near", "forum")}


@pytest.mark.parametrize("weight", [0.3, 1.0, 2.5])
def test_train_copies_average_the_weight(weight):
    copies = [train_copies(doc_id, weight, seed=0) for doc_id in range(4000)]
    assert set(copies) <= {int(weight), int(weight) + 1}
    assert abs(sum(copies) / len(copies) - weight) < 0.03


def test_split_weights_the_train_split_only(tmp_path):
    docs = [{"id": n, "text": chinese(n), "source": "zhwiki"} for n in range(200)]
    docs += [{"id": extra_doc_id("book", n), "text": chinese(1000 + n), "source": "book"} for n in range(200)]
    write_docs(tmp_path / "docs.parquet", docs)
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), tmp_path / "removed.parquet")
    for weights in ([], ["book=2.5", "zhwiki=0.5"]):
        run_ok("data.split", "--inputs", tmp_path / "docs.parquet", "--removed", tmp_path / "removed.parquet",
               "--validation-fraction", 0.1, "--weights", *weights,
               "--train", tmp_path / f"train{len(weights)}.parquet",
               "--validation", tmp_path / f"val{len(weights)}.parquet", "--stats", tmp_path / "s.json")
    assert read(tmp_path / "val0.parquet") == read(tmp_path / "val2.parquet")
    plain, weighted = read(tmp_path / "train0.parquet"), read(tmp_path / "train2.parquet")
    count = {source: sum(d["source"] == source for d in weighted) / sum(d["source"] == source for d in plain)
             for source in ("book", "zhwiki")}
    assert 2.3 < count["book"] < 2.7 and 0.4 < count["zhwiki"] < 0.6
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["by_source"]["book"]["train_documents"] == sum(d["source"] == "book" for d in weighted)
    assert stats["kept"]["documents"] == 400
