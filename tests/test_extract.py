"""extract: the real zhwiki slice, the demo multistream dump, -{…}- markup, broken and truncated dumps."""
import bz2
import random
import re

import opencc
import pyarrow.parquet as pq
import pytest
from tqdm import tqdm
from wikiextractor.extract import Extractor

from conftest import DEMO_DUMP, DEMO_INDEX, REAL_SLICE, SHARED_DATA, run_fails, run_ok, run_stage
from workflow_scripts.data.extract import EMPTY_BRACKETS, DumpReader, iter_pages, resolve_conversion
from workflow_scripts.lib.corpus.wikitext_cleaning import clean_paragraphs, extractor_for

BROKEN = sorted((SHARED_DATA / "zhwiki").glob("zhwiki-broken-*.xml"))


def extract(tmp_path, dump, *extra):
    out = tmp_path / "docs.parquet"
    run_ok("data.extract", "--dump", dump, "--out", out, "--stats", tmp_path / "stats.json", *extra)
    return pq.read_table(out).to_pylist()


@pytest.fixture(scope="module")
def real_docs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    docs = extract(tmp, REAL_SLICE)
    converted = tmp / "converted.parquet"
    run_ok("data.convert", "--opencc-config", "t2s", "--input", tmp / "docs.parquet", "--out", converted,
           "--stats", tmp / "convert.json")
    return docs, pq.read_table(converted).to_pylist()


@pytest.mark.parametrize("leftover", ["-{", "}-", "{{", "}}", "[[", "]]", "（）", "()", "<ref", "&lt;"])
def test_real_slice_has_no_markup_left(real_docs, leftover):
    docs, _ = real_docs
    assert docs, "the real slice gave no documents"
    offenders = [d["title"] for d in docs if leftover in d["text"] or leftover in d["title"]]
    assert not offenders, f"{leftover!r} left in {offenders}"


def test_real_slice_headings_lose_the_trailing_period(real_docs):
    docs, _ = real_docs
    lines = [line for d in docs for line in d["text"].splitlines()]
    assert any(line in ("参考文献", "參考文獻", "外部链接", "外部連結", "参考资料", "參考資料") for line in lines)
    assert not [line for line in lines if re.fullmatch(r"(参考|參考|外部)\S{2,4}\.", line)]


def test_real_slice_keeps_only_articles(real_docs):
    docs, _ = real_docs
    assert all(d["url"].endswith(f"?curid={d['id']}") for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)
    other_namespaces = ("Template", "Wikipedia", "Category")
    assert not [d for d in docs if ":" in d["title"] and d["title"].split(":")[0] in other_namespaces]


def test_converted_real_slice_has_nothing_left_for_t2s(real_docs):
    _, converted = real_docs
    t2s = opencc.OpenCC("t2s")
    for doc in converted:
        assert t2s.convert(doc["text"]) == doc["text"], doc["title"]
        assert t2s.convert(doc["title"]) == doc["title"]


def test_demo_shards_partition_the_dump(tmp_path):
    whole = extract(tmp_path, DEMO_DUMP, "--index", DEMO_INDEX, "--shards", 1)
    parts = []
    for shard in range(3):
        parts += extract(tmp_path, DEMO_DUMP, "--index", DEMO_INDEX, "--shard", shard, "--shards", 3)
    assert [d["id"] for d in parts] == [d["id"] for d in whole]
    assert parts == whole


def test_demo_article_quirks(tmp_path):
    docs = extract(tmp_path, DEMO_DUMP, "--index", DEMO_INDEX, "--shards", 1)
    text = "\n".join(d["text"] for d in docs)
    for leftover in ("-{", "{{", "[[", "{|", "<ref", "（）", "()"):
        assert leftover not in text
    assert not [d for d in docs if "消歧義" in d["title"] or "消歧义" in d["title"]]


def test_disambiguation_and_headings_follow_flags(tmp_path):
    default = extract(tmp_path, DEMO_DUMP, "--index", DEMO_INDEX, "--shards", 1)
    kept = extract(tmp_path, DEMO_DUMP, "--index", DEMO_INDEX, "--shards", 1, "--keep-disambiguation",
                   "--no-keep-headings")
    assert len(kept) > len(default)
    headings = {line for d in default for line in d["text"].splitlines() if len(line) <= 6}
    kept_lines = {line for d in kept for line in d["text"].splitlines()}
    assert headings - kept_lines, "--no-keep-headings left every short heading line in place"


@pytest.mark.parametrize("markup, expected", [
    ("-{zh-hans:软件;zh-hant:軟體}-", "软件"),
    ("-{zh-hant:軟體;zh-cn:软件;}-", "软件"),
    ("-{zh-tw:軟體;zh-hk:軟件}-", "軟體"),
    ("-{紐約}-", "紐約"),
    ("前-{H|zh-hans:信息;zh-hant:資訊}-後", "前後"),
    ("-{R|香港}-", "香港"),
    ("-{zh-hans:大-{A}-;zh-hant:乙}-", "大A"),
    ("-{金=>zh-hans:甲;金=>zh-hant:乙;}-", "甲"),
    ("-{zh-hans:a;b;zh-hant:c}-", "a;b"),
])
def test_resolve_conversion(markup, expected):
    assert resolve_conversion(markup) == expected


@pytest.mark.parametrize("before, after", [
    ("北京（）是首都", "北京是首都"),
    ("北京（，）是首都", "北京是首都"),
    ("北京（英语：）是首都", "北京是首都"),
    ("函数f()", "函数f"),
    ("北京（首都）", "北京（首都）"),
])
def test_empty_brackets(before, after):
    assert EMPTY_BRACKETS.sub("", before) == after


@pytest.mark.parametrize("broken, why", [
    ("zhwiki-broken-1.xml", "no <title>"),
    ("zhwiki-broken-2.xml", "no <ns>"),
    ("zhwiki-broken-3.xml", "no <text>"),
    ("zhwiki-broken-4.xml", "<sha1> belongs to a non-empty text"),
])
def test_broken_dumps_fail_with_one_line(tmp_path, broken, why):
    path = SHARED_DATA / "zhwiki" / broken
    out = tmp_path / "docs.parquet"
    log = tmp_path / "extract.log"
    result = run_stage("data.extract", "--dump", path, "--out", out, "--stats", tmp_path / "s.json", "--log", log)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().removeprefix("extract: ") in log.read_text()
    assert result.stderr.startswith(f"extract: error: {path}: malformed dump at page id=")
    assert why in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


def test_every_broken_file_is_covered():
    assert [p.name for p in BROKEN] == [f"zhwiki-broken-{i}.xml" for i in range(1, 5)]


def test_truncated_dump_fails_and_keeps_the_previous_output(tmp_path):
    good = extract(tmp_path, REAL_SLICE)
    data = REAL_SLICE.read_bytes()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])
    result = run_stage("data.extract", "--dump", cut, "--out", tmp_path / "docs.parquet", "--stats",
                       tmp_path / "s.json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{cut}:" in result.stderr and "truncated" in result.stderr
    assert pq.read_table(tmp_path / "docs.parquet").to_pylist() == good


def test_truncated_xml_inside_a_page(tmp_path):
    text = bz2.decompress(REAL_SLICE.read_bytes()).decode()
    cut = tmp_path / "cut.xml"
    cut.write_text(text[: text.index("</page>", len(text) // 2)], encoding="utf-8")
    result = run_stage("data.extract", "--dump", cut, "--out", tmp_path / "o.parquet", "--stats", tmp_path / "s.json")
    assert result.returncode == 1
    assert "the file ends inside this page" in result.stderr and str(cut) in result.stderr


def test_missing_dump(tmp_path):
    result = run_stage("data.extract", "--dump", tmp_path / "nope.xml.bz2", "--out", tmp_path / "o.parquet",
                       "--stats", tmp_path / "s.json")
    assert result.returncode == 1 and "nope.xml.bz2: no such file" in result.stderr


def link_local(tmp_path, dump):
    """What `download: {source: local}` does: a link named like a downloaded .xml.bz2 dump."""
    out = tmp_path / "download"
    run_ok("data.download", "--source", "local", "--local-dump", dump, "--dump", out / "dump.xml.bz2",
           "--index", out / "index.txt.bz2", "--sha1sums", out / "sha1sums.txt", "--stats", out / "stats.json")
    return out / "dump.xml.bz2", out / "index.txt.bz2"


def test_a_local_plain_xml_dump_is_read_by_its_content_not_its_link_name(tmp_path):
    plain = tmp_path / "mine.xml"
    plain.write_bytes(bz2.decompress(REAL_SLICE.read_bytes()))
    dump, index = link_local(tmp_path, plain)
    assert extract(tmp_path, dump, "--index", index) == extract(tmp_path / "bz2", REAL_SLICE)


@pytest.mark.parametrize("broken", [b.name for b in BROKEN])
def test_a_local_broken_dump_is_named_and_its_page_error_kept(tmp_path, broken):
    user_file = SHARED_DATA / "zhwiki" / broken
    dump, index = link_local(tmp_path, user_file)
    run_fails("data.extract", "^extract: error: " + re.escape(f"{user_file.resolve()}: malformed dump at page id="),
              "--dump", dump, "--index", index, "--out", tmp_path / "o.parquet", "--stats", tmp_path / "s.json")


def test_a_truncated_local_dump_gets_advice_for_a_local_file(tmp_path):
    cut = tmp_path / "mine.xml.bz2"
    cut.write_bytes(REAL_SLICE.read_bytes()[: REAL_SLICE.stat().st_size // 2])
    dump, index = link_local(tmp_path, cut)
    advice = re.escape("check it (bzip2 -t) or export it again")
    line = run_fails("data.extract", "^extract: error: " + re.escape(f"{cut}:") + f".*{advice}$", "--dump", dump,
                     "--index", index, "--out", tmp_path / "o.parquet", "--stats", tmp_path / "s.json")
    assert "download it again" not in line


CITE = re.compile(r"\{\{\s*cite[^{}]*(?:\{\{[^{}]*\}\}[^{}]*)*\}\}", re.I)


def test_citation_parameters_never_reach_the_text(tmp_path):
    """The slice's own citation templates, also laid out one parameter a line with spaces around
    '=' (as many articles write them), leave no `deadurl=`, `accessdate=`, `author2=` ... behind."""
    text = bz2.decompress(REAL_SLICE.read_bytes()).decode()
    templates = CITE.findall(text)
    names = {name.lower() for t in templates for name in re.findall(r"\|\s*([A-Za-z][\w-]*)\s*=", t)}
    assert len(templates) > 50 and {"deadurl", "accessdate", "author2"} <= names
    spread = tmp_path / "spread.xml"
    spread.write_text(CITE.sub(lambda m: re.sub(r"\s*\|\s*([A-Za-z][\w-]*)\s*=\s*", r"\n| \1 = ", m.group()), text),
                      encoding="utf-8")
    assert "\n| deadurl = yes" in spread.read_text(encoding="utf-8")
    for dump in (REAL_SLICE, spread):
        docs = extract(tmp_path / dump.stem, dump)
        leaks = {m.group(1) for d in docs for m in re.finditer(r"([A-Za-z][\w-]*)\s*=", d["text"])
                 if m.group(1).lower() in names}
        assert docs and not leaks, f"{dump.name}: {sorted(leaks)}"


def stock_paragraphs(text, urlbase):
    return Extractor(1, None, urlbase, "t", []).clean_text(text, mark_headers=True, expand_templates=False,
                                                          html_safe=False)


@pytest.mark.parametrize("dump, index", [(DEMO_DUMP, DEMO_INDEX), (REAL_SLICE, None)], ids=["demo", "real"])
def test_cleaning_equals_wikiextractors_on_every_page(dump, index):
    """The cleaning with its passes skipped gives what WikiExtractor's clean_text gives, page by page
    (the wikitext as read, every namespace, before the stage's own pre- and post-processing)."""
    reader = DumpReader(dump, index, 0, 1)
    extractor = extractor_for(reader.urlbase)
    pages = list(iter_pages(reader.lines(tqdm(disable=True)), dump, ""))
    assert len(pages) > 30
    for page in pages:
        expected = stock_paragraphs(page["text"], reader.urlbase)
        assert clean_paragraphs(extractor, page["text"]) == expected, page["title"]


MARKUP = ["中文段落，", "text ", "\n", "\n\n", "== 标题 ==\n", "{{cite book|title=古籍}}", "{{a|{{b}}}}",
          "{|\n| x\n|}", "[[条目|标签]]", "[[条目]]s", "[[[[双括号]]]]", "[[未闭合", "]]", "[http://example.org 链接]",
          "'''粗'''", "''斜''", "'''''两者'''''", '""引""', "__NOTOC__", "  ", "....", " ,", "( ", "\t",
          "<br>", "<br/>", "</br>", "<hr />", "<p>", "</p>", "<center>", "<h2>", "<!-- 注释 -->", "<!--", "-->",
          '<ref name="a">出处</ref>', '<ref name="b"/>', "<REF>大写</Ref>", "< ref >空格</ ref >", "<references/>",
          "<sup>1</sup>", '<span style="x">', "</span>", "<div>", "</div>", "<gallery>\n图\n</gallery>", "<noinclude>",
          "</noinclude>", "<pre>x</pre>", "<small>小</small>", "<math>x^2</math>", "<code>a</code>",
          "&lt;math&gt;y&lt;/math&gt;", "&amp;", "&#12354;", "&nbsp;",
          '&lt;syntaxhighlight lang="py"&gt;x = 1&lt;/syntaxhighlight&gt;', "<ſmall>ſ</ſmall>", "<\u0130mg>",
          "<b\u0130g>", "<b\u0131g>b</b\u0131g>", "<\u212abd>k</\u212abd>", "<s>删</s>", "<tr>", "<td>格</td>",
          "<", ">"]


def test_cleaning_equals_wikiextractors_on_random_markup():
    """Random runs of the markup each skipped pass looks for, tag names in odd cases ('ſ', 'İ', 'ı',
    the Kelvin sign, which re.IGNORECASE matches to ASCII letters) included."""
    rng = random.Random(0)
    extractor = extractor_for("https://zh.wikipedia.org/wiki")
    for _ in range(3000):
        text = "".join(rng.choices(MARKUP, k=rng.randrange(1, 30)))
        assert clean_paragraphs(extractor, text) == stock_paragraphs(text, "https://zh.wikipedia.org/wiki"), text
