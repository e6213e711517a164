"""One summary of a whole run, and the HTML pages `snakemake --report` shows.

    python -m workflow_scripts.eval.run_summary --corpus results/corpus/summary.json \
        --dedup-report results/dedup/removed.parquet --tokenizer results/tokenizer_report.json \
        --pretrain results/pretrain/summary.json --sft results/sft/summary.json \
        --bpb results/eval/*/bpb.json --multiple-choice results/eval/*/mc-*.json \
        --knowledge results/eval/*/knowledge.json --samples results/eval/*/samples.json \
        --benchmarks results/benchmarks/**/*.tsv \
        --json results/summary.json --markdown results/summary.md --pages results/report

The summary table has the data funnel, tokenizer compression, final losses, bits per byte,
accuracies, the fact probe's accuracy per phrasing and the wall time of every stage (from
Snakemake's benchmark files, summed over a stage's jobs). --pages gets summary.html, data.html,
tokenizer.html, evaluation.html and samples.html: plain tables, since the report shows HTML and
images but not markdown.
"""
import csv
import html
from pathlib import Path

import pyarrow.parquet as pq

from workflow_scripts.lib.atomic_files import read_json, write_json, write_text
from workflow_scripts.lib.report_words import LANGUAGE_NAMES, Words
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import stage_cli
from workflow_scripts.lib.summary_tables import SOURCE_COLUMNS, SOURCE_KEYS, markdown_table

STYLE = """body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .7em;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.2em}"""
DEDUP_EXAMPLES = 20
GENERATED_EXAMPLES = 12


def model_name(result):
    return Path(result["model"]).name


def fmt(value, digits=4):
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def stage_times(paths, root):
    """{stage: (jobs, seconds summed over its jobs)} from benchmark TSVs under root, in the order the
    stages last finished (the files' modification times)."""
    stages = {}
    for path in sorted(paths, key=lambda p: p.stat().st_mtime):
        stage = Path(path).relative_to(root).parts[0].removesuffix(".tsv")
        with open(path, newline="") as fh:
            seconds = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
        jobs, total = stages.pop(stage, (0, 0.0))
        stages[stage] = (jobs + 1, total + seconds)
    return stages


def accuracy_rows(mc_results):
    """(model, set, shots, scoring, accuracy, questions, chance, prompts with fewer shots, questions too
    long to score) per multiple-choice result."""
    return [(model_name(r), r["name"], s["shots"], s["scoring"], s["overall"], s["questions"], s["chance"],
             s["prompts_shortened"], s["too_long"]) for r in mc_results for s in r["results"]]


def accuracy_measure(say, name, shots, scoring, questions, chance, shortened, too_long):
    """The summary's words for one accuracy, with the prompts that did not fit the context."""
    notes = [say("{questions} questions", questions=questions), say("chance {chance}", chance=f"{chance:.0%}")]
    notes += [say("{count} prompts cut to fewer shots to fit the model's context", count=shortened)] if shots else []
    notes += [say("{count} too long to score", count=too_long)] if too_long else []
    return say("{name} {shots}-shot {scoring} accuracy ({notes})", name=name, shots=shots, scoring=scoring,
               notes=say(", ").join(notes))


def knowledge_rows(probes):
    """(model, relation, phrasing, facts, accuracy, chance, mean rank) per fact-probe result, the
    phrasings over all relations (relation "all") first."""
    return [(model_name(p), relation, phrasing, s["facts"], f"{s['accuracy']:.1%}", f"{s['chance']:.1%}",
             round(s["mean_rank"], 2))
            for p in probes for relation, phrasings in [("all", p["overall"]), *p["relations"].items()]
            for phrasing, s in phrasings.items()]


def probe_measure(say, phrasing, facts, chance):
    """The fact probe's phrasings in the summary; the question's figure is a ranking of answers the model
    is shown, not what it says (that is the greedy-answer row beside it)."""
    what = say("question: the right answer ranked first") if phrasing == "question" else phrasing
    return say("fact probe, {what} ({facts} facts, chance {chance})", what=what, facts=facts, chance=chance)


def step_name(say, step):
    """A funnel step ("clean: drop too_short", "split: train", "ingest: books") in the report's words."""
    stage, _, detail = step.partition(": ")
    if not detail:
        return say.name(stage)
    if detail.startswith("drop "):
        return say("{stage}: drop {reason}", stage=say.name(stage), reason=detail.removeprefix("drop "))
    return say("{stage}: {detail}", stage=say.name(stage), detail=say.name(detail))


def expansion_rows(say, expansion):
    if expansion is None:
        return []
    validation = expansion["validation"]
    section = say("vocabulary expansion")
    return [(section, say("tokens added to the base's"), f"{expansion['added_tokens']:,} "
             f"({expansion['base_vocab']:,} -> {expansion['expanded_vocab']:,})"),
            (section, say("tokens / character (validation), base -> expanded"),
             f"{validation['tokens_per_char_before']:.3f} -> {validation['tokens_per_char_after']:.3f}")]


def summary_rows(say, corpus, tokenizer, expansion, training, bpb, mc_results, probes, times):
    """(section, measure, value) rows of the run summary, in the words of `say`."""
    funnel = {row["step"]: row for row in corpus["funnel"]}
    rows = [(say("data"), say("{step}: documents / characters", step=step_name(say, step)),
             f"{funnel[step]['documents']:,} / {funnel[step]['characters'] or 0:,}")
            for step in ("extract", "clean", "dedup", "split: train", "split: validation")]
    validation = tokenizer["validation"]
    rows += [(say("tokenizer"), say("vocabulary"), fmt(tokenizer["vocab_size"])),
             (say("tokenizer"), say("characters / token (validation)"), fmt(validation["characters_per_token"], 3)),
             (say("tokenizer"), say("bytes / token (validation)"), fmt(validation["bytes_per_token"], 3))]
    rows += expansion_rows(say, expansion)
    for stage, summary in training.items():
        rows += [(say(stage), say(key.replace("_", " ")), fmt(summary[key])) for key in
                 ("parameters", "pairs", "questions", "steps", "tokens", "first_loss", "final_loss", "val_loss",
                  "val_bpb", "first_margin", "final_margin", "final_reward_accuracy", "first_reward", "final_reward",
                  "final_kl", "tokens_per_s")
                 if key in summary]
    for result in bpb:
        rows += [(model_name(result), say("bits per byte (validation)"), fmt(result["bits_per_byte"])),
                 (model_name(result), say("perplexity (validation)"), fmt(result["perplexity"], 2))]
    rows += [(model, accuracy_measure(say, name, shots, scoring, questions, chance, shortened, too_long),
              f"{accuracy:.1%}")
             for model, name, shots, scoring, accuracy, questions, chance, shortened, too_long
             in accuracy_rows(mc_results)]
    rows += [(model, probe_measure(say, phrasing, facts, chance), accuracy)
             for model, relation, phrasing, facts, accuracy, chance, _ in knowledge_rows(probes) if relation == "all"]
    rows += [(model_name(p), say("fact probe, question: the right object named in a greedy answer ({facts} facts)",
                                 facts=len(p["generated"])), f"{p['generated_accuracy']:.1%}")
             for p in probes if p.get("generated")]
    rows += [(say("wall time"), say("{stage} ({jobs} jobs)" if jobs > 1 else "{stage} ({jobs} job)", stage=stage,
                                    jobs=jobs), say("{seconds} s", seconds=f"{seconds:,.1f}"))
             for stage, (jobs, seconds) in times.items()]
    return rows


def opening(chat_model):
    """What a newcomer reads first: what was built, where it is, what to run next."""
    steps = "fine-tuned" + {"dpo_model": " and preference-tuned (DPO)",
                            "grpo_model": " and trained on verifiable rewards (GRPO)"}.get(chat_model, "")
    chat = f"python -m workflow_scripts.serving.chat results/{chat_model}"
    serve = f"python -m workflow_scripts.serving.serve results/{chat_model} --port 8000"
    return (f"- Built: the chat model `results/{chat_model}`, {steps} from the base model `results/base_model`.\n"
            f"- Talk to it: `{chat}`, or serve it with a chat page: `{serve}`.\n"
            "- The whole run as one page: `snakemake --report results/report.html`.\n")


def first_look_rows(bpb, mc_results, probes):
    """(model, measure, value, what to compare it with) of the figures to look at first."""
    rows = [(model_name(r), "bits per byte on held-out text", fmt(r["bits_per_byte"]),
             "lower is better; compare the models") for r in bpb]
    rows += [(model_name(p), "fact questions answered right, writing the answer (generated_accuracy)",
              f"{p['generated_accuracy']:.1%}", "what a user sees in the chat") for p in probes if p.get("generated")]
    rows += [(model_name(p), "fact questions whose right answer ranks first (qa_accuracy)", f"{p['qa_accuracy']:.1%}",
              f"chance {p['qa_chance']:.1%}") for p in probes if p.get("qa_accuracy") is not None]
    rows += [(model, f"{name} {shots}-shot {scoring} multiple choice", f"{accuracy:.1%}", f"chance {chance:.0%}")
             for model, name, shots, scoring, accuracy, _, chance, _, _ in accuracy_rows(mc_results)
             if shots == 0 and scoring == "cloze"]
    return rows


def html_cell(value):
    if isinstance(value, (int, float)):
        return f'<td class="n">{html.escape(fmt(value))}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def html_table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(map(html_cell, row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(languages, content):
    """One page with a section per language: `content(say)` gives its (title, sections), sections as
    (heading, html) pairs; a line of links to each language heads the page when there are two."""
    parts, titles = [], []
    for language in languages:
        title, sections = content(Words(language))
        body = "".join(f"<h2>{html.escape(heading)}</h2>{table}" for heading, table in sections)
        parts.append(f'<section id="{language}" lang="{language}"><h1>{html.escape(title)}</h1>{body}</section>')
        titles.append(title)
    switch = " · ".join(f'<a href="#{language}">{LANGUAGE_NAMES[language]}</a>' for language in languages)
    return (f'<!DOCTYPE html><html lang="{languages[0]}"><head><meta charset="utf-8"><title>{html.escape(titles[0])}'
            f"</title><style>{STYLE}</style></head><body>{f'<nav>{switch}</nav>' * (len(languages) > 1)}"
            f"{''.join(parts)}</body></html>\n")


def summary_page(rows_in):
    def content(say):
        return say("Run summary"), [("", html_table([say("section"), say("measure"), say("value")], rows_in(say)))]
    return content


def data_page(corpus, dedup_report):
    funnel = [(r["step"], r["documents"], "" if r["characters"] is None else r["characters"]) for r in corpus["funnel"]]
    dedup = {k: v for k, v in corpus["dedup"].items() if k != "by_source"}
    examples = pq.read_table(dedup_report).slice(0, DEDUP_EXAMPLES).to_pylist()

    def content(say):
        return say("Data"), [
            (say("Funnel: documents and characters after each stage and filter"),
             html_table([say("step"), say("documents"), say("characters")],
                        [(step_name(say, step), documents, characters) for step, documents, characters in funnel])),
            (say("By corpus"), html_table([say(column) for column in SOURCE_COLUMNS],
                                          [[row[key] for key in SOURCE_KEYS] for row in corpus["sources"]])),
            (say("Deduplication"), html_table([say("measure"), say("value")],
                                              [(say.name(k.replace("_", " ")), v) for k, v in dedup.items()])),
            (say("Removed duplicates (first {count})", count=DEDUP_EXAMPLES),
             html_table([say(h) for h in ("removed", "corpus", "kind", "duplicate of", "its corpus",
                                          "estimated Jaccard")],
                        [(r["title"], r["source"], say.name(r["kind"]), r["duplicate_of_title"],
                          r["duplicate_of_source"], r["similarity"]) for r in examples]))]
    return content


def tokenizer_page(tokenizer):
    settings = [(k.replace("_", " "), v) for k, v in tokenizer.items() if not isinstance(v, dict)]
    validation = [(k.replace("_", " "), v) for k, v in tokenizer["validation"].items()]

    def content(say):
        return say("Tokenizer"), [
            (say("Training"), html_table([say("setting"), say("value")], [(say.name(k), v) for k, v in settings])),
            (say("Validation split"), html_table([say("measure"), say("value")],
                                                 [(say.name(k), v) for k, v in validation]))]
    return content


def evaluation_page(bpb, mc_results, probes):
    def content(say):
        sections = [(say("Bits per byte and perplexity on the validation split"), html_table(
            [say(h) for h in ("model", "bits per byte", "perplexity", "tokens", "bytes", "bytes / token")],
            [(model_name(r), r["bits_per_byte"], r["perplexity"], r["tokens"], r["bytes"], r["bytes_per_token"])
             for r in bpb]))]
        sections.append((say("Multiple choice, overall"), html_table(
            [say(h) for h in ("model", "set", "shots", "scoring", "accuracy", "questions", "chance",
                              "prompts with fewer shots", "too long to score")],
            [(model, name, shots, scoring, f"{accuracy:.1%}", questions, f"{chance:.1%}", shortened, too_long)
             for model, name, shots, scoring, accuracy, questions, chance, shortened, too_long
             in accuracy_rows(mc_results)])))
        sections += [subject_section(say, result) for result in mc_results]
        return say("Evaluation"), sections + probe_sections(say, probes)
    return content


def subject_section(say, result):
    subjects = result["results"][0]["subjects"]
    rows = [(subject, *(f"{s['subjects'][subject]['accuracy']:.1%}" for s in result["results"]),
             subjects[subject]["questions"]) for subject in subjects]
    return (say("{model} on {set}, per subject", model=model_name(result), set=result["name"]), html_table(
        [say("subject"), *(say("{shots}-shot {scoring}", shots=s["shots"], scoring=s["scoring"])
                           for s in result["results"]), say("questions")], rows))


def probe_sections(say, probes):
    if not probes:
        return []
    return [(say("Fact probe: the likeliest candidate object, per relation and phrasing (question: the answer to "
                 "the relation's question)"), html_table(
                [say(h) for h in ("model", "relation", "phrasing", "facts", "accuracy", "chance", "mean rank")],
                knowledge_rows(probes))),
            (say("Fact probe: the first {count} questions answered by greedy generation (right: the fact's object "
                 "named, no other candidate)", count=GENERATED_EXAMPLES), html_table(
                [say(h) for h in ("model", "question", "answer", "right")],
                [(model_name(p), a["question"], a["reply"], say("yes") if a["right"] else say("no"))
                 for p in probes for a in p.get("generated", [])[:GENERATED_EXAMPLES]]))]


def samples_page(samples):
    models = [model_name(s) for s in samples]
    prompts = [item["prompt"] for item in samples[0]["samples"]]
    answers = [{item["prompt"]: item["answer"] for item in s["samples"]} for s in samples]

    def content(say):
        decoding = say("; ").join(
            say("{model}: {style} prompts, greedy decoding, at most {max_new_tokens} new tokens, repetition penalty "
                "{penalty}", model=model_name(s), style=s["style"], max_new_tokens=s["decoding"]["max_new_tokens"],
                penalty=s["decoding"]["repetition_penalty"]) for s in samples)
        return say("Generation samples"), [
            (decoding, html_table([say("prompt"), *models], [(p, *(a.get(p, "") for a in answers)) for p in prompts])),
            (say("Each prompt as a chat turn (greedy): does the model keep ChatML?"), html_table(
                [say(h) for h in ("model", "answers ending with <|im_end|>", "answers leaking a role marker",
                                  "mean characters")],
                [chat_format_row(say, s) for s in samples]))]
    return content


def chat_format_row(say, samples):
    checks = samples["chat_format"]
    if checks is None:
        return model_name(samples), say("no chat template"), "", ""
    return (model_name(samples), f"{checks['ends_with_im_end']:.0%}", f"{checks['leaks_role_marker']:.0%}",
            checks["mean_answer_chars"])


def add_arguments(ap):
    ap.add_argument("--corpus", type=Path, required=True, help="corpus_summary JSON")
    ap.add_argument("--dedup-report", type=Path, required=True, help="dedup's removed-documents Parquet")
    ap.add_argument("--tokenizer", type=Path, required=True, help="tokenizer report JSON")
    ap.add_argument("--pretrain", type=Path, required=True, help="pretraining summary JSON")
    ap.add_argument("--sft", type=Path, required=True, help="SFT summary JSON")
    ap.add_argument("--dpo", type=Path, nargs="?", help="DPO summary JSON, when DPO ran")
    ap.add_argument("--grpo", type=Path, nargs="?", help="GRPO summary JSON, when GRPO ran")
    ap.add_argument("--continued", type=Path, nargs="?", help="continued pretraining's summary JSON, when it ran")
    ap.add_argument("--expansion", type=Path, nargs="?", help="expand_vocab's report, when it ran")
    ap.add_argument("--bpb", type=Path, nargs="+", required=True)
    ap.add_argument("--multiple-choice", type=Path, nargs="*", default=[])
    ap.add_argument("--knowledge", type=Path, nargs="*", default=[], help="fact-probe JSONs, when a facts file is set")
    ap.add_argument("--samples", type=Path, nargs="+", required=True)
    ap.add_argument("--benchmarks", type=Path, nargs="*", default=[], help="Snakemake benchmark TSVs")
    ap.add_argument("--benchmarks-root", type=Path, default=Path("results/benchmarks"),
                    help="the folder whose first level names the stage of each TSV")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)
    ap.add_argument("--pages", type=Path, required=True, help="folder for the report's HTML pages")
    add_settings(ap, "eval", "report_languages")


def run(args, progress_stream):
    corpus, tokenizer = read_json(args.corpus), read_json(args.tokenizer)
    training = {"pretrain": read_json(args.pretrain), "sft": read_json(args.sft)}
    if args.dpo:
        training["dpo"] = read_json(args.dpo)
    if args.grpo:
        training["grpo"] = read_json(args.grpo)
    if args.continued:
        training["continued pretraining"] = read_json(args.continued)
    expansion = read_json(args.expansion) if args.expansion else None
    chat_model = "grpo_model" if args.grpo else "dpo_model" if args.dpo else "sft_model"  # the last one built
    bpb, mc_results = [read_json(p) for p in args.bpb], [read_json(p) for p in args.multiple_choice]
    samples, probes = [read_json(p) for p in args.samples], [read_json(p) for p in args.knowledge]
    times = stage_times(args.benchmarks, args.benchmarks_root)
    def rows_in(say):
        return summary_rows(say, corpus, tokenizer, expansion, training, bpb, mc_results, probes, times)
    rows = rows_in(Words("en"))
    write_json(args.json, [{"section": s, "measure": m, "value": v} for s, m, v in rows])
    first_look = markdown_table(["model", "measure", "value", "compare with"], first_look_rows(bpb, mc_results, probes))
    write_text(args.markdown, "# Run summary\n\n" + opening(chat_model) +
               "\n## First look\n\n" + first_look + "\n## Every figure\n\n" +
               markdown_table(["section", "measure", "value"], rows))
    pages = {"summary": summary_page(rows_in), "data": data_page(corpus, args.dedup_report),
             "tokenizer": tokenizer_page(tokenizer), "evaluation": evaluation_page(bpb, mc_results, probes),
             "samples": samples_page(samples)}
    for name, content in pages.items():
        write_text(args.pages / f"{name}.html", html_page(args.report_languages, content))
    print(markdown_table(["section", "measure", "value"], rows), file=progress_stream)


if __name__ == "__main__":
    stage_cli("run_summary", __doc__, add_arguments, run)
