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


def accuracy_measure(name, shots, scoring, questions, chance, shortened, too_long):
    """The summary's words for one accuracy, with the prompts that did not fit the context."""
    notes = [f"{questions} questions", f"chance {chance:.0%}"]
    notes += [f"{shortened} prompts cut to fewer shots to fit the model's context"] if shots else []
    notes += [f"{too_long} too long to score"] if too_long else []
    return f"{name} {shots}-shot {scoring} accuracy ({', '.join(notes)})"


def knowledge_rows(probes):
    """(model, relation, phrasing, facts, accuracy, chance, mean rank) per fact-probe result, the
    phrasings over all relations (relation "all") first."""
    return [(model_name(p), relation, phrasing, s["facts"], f"{s['accuracy']:.1%}", f"{s['chance']:.1%}",
             round(s["mean_rank"], 2))
            for p in probes for relation, phrasings in [("all", p["overall"]), *p["relations"].items()]
            for phrasing, s in phrasings.items()]


def probe_measure(phrasing, facts, chance):
    """The fact probe's phrasings in the summary; the question's figure is a ranking of answers the model
    is shown, not what it says (that is the greedy-answer row beside it)."""
    what = "question: the right answer ranked first" if phrasing == "question" else phrasing
    return f"fact probe, {what} ({facts} facts, chance {chance})"


def expansion_rows(expansion):
    if expansion is None:
        return []
    validation = expansion["validation"]
    return [("vocabulary expansion", "tokens added to the base's", f"{expansion['added_tokens']:,} "
             f"({expansion['base_vocab']:,} -> {expansion['expanded_vocab']:,})"),
            ("vocabulary expansion", "tokens / character (validation), base -> expanded",
             f"{validation['tokens_per_char_before']:.3f} -> {validation['tokens_per_char_after']:.3f}")]


def summary_rows(corpus, tokenizer, expansion, training, bpb, mc_results, probes, times):
    """(section, measure, value) rows of the run summary."""
    funnel = {row["step"]: row for row in corpus["funnel"]}
    rows = [("data", f"{step}: documents / characters",
             f"{funnel[step]['documents']:,} / {funnel[step]['characters'] or 0:,}")
            for step in ("extract", "clean", "dedup", "split: train", "split: validation")]
    validation = tokenizer["validation"]
    rows += [("tokenizer", "vocabulary", fmt(tokenizer["vocab_size"])),
             ("tokenizer", "characters / token (validation)", fmt(validation["characters_per_token"], 3)),
             ("tokenizer", "bytes / token (validation)", fmt(validation["bytes_per_token"], 3))]
    rows += expansion_rows(expansion)
    for stage, summary in training.items():
        rows += [(stage, key.replace("_", " "), fmt(summary[key])) for key in
                 ("parameters", "pairs", "steps", "tokens", "first_loss", "final_loss", "val_loss", "val_bpb",
                  "first_margin", "final_margin", "final_reward_accuracy", "tokens_per_s")
                 if key in summary]
    for result in bpb:
        rows += [(model_name(result), "bits per byte (validation)", fmt(result["bits_per_byte"])),
                 (model_name(result), "perplexity (validation)", fmt(result["perplexity"], 2))]
    rows += [(model, accuracy_measure(name, shots, scoring, questions, chance, shortened, too_long), f"{accuracy:.1%}")
             for model, name, shots, scoring, accuracy, questions, chance, shortened, too_long
             in accuracy_rows(mc_results)]
    rows += [(model, probe_measure(phrasing, facts, chance), accuracy)
             for model, relation, phrasing, facts, accuracy, chance, _ in knowledge_rows(probes) if relation == "all"]
    rows += [(model_name(p), f"fact probe, question: the right object named in a greedy answer "
              f"({len(p['generated'])} facts)", f"{p['generated_accuracy']:.1%}") for p in probes if p.get("generated")]
    rows += [("wall time", f"{stage} ({jobs} job{'s' * (jobs > 1)})", f"{seconds:,.1f} s")
             for stage, (jobs, seconds) in times.items()]
    return rows


def opening(chat_model):
    """What a newcomer reads first: what was built, where it is, what to run next."""
    steps = "fine-tuned" + (" and preference-tuned (DPO)" if chat_model == "dpo_model" else "")
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


def html_page(title, sections):
    """sections: (heading, html) pairs."""
    body = "".join(f"<h2>{html.escape(heading)}</h2>{content}" for heading, content in sections)
    return (f'<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def data_page(corpus, dedup_report):
    funnel = [(r["step"], r["documents"], "" if r["characters"] is None else r["characters"]) for r in corpus["funnel"]]
    dedup = {k: v for k, v in corpus["dedup"].items() if k != "by_source"}
    examples = pq.read_table(dedup_report).slice(0, DEDUP_EXAMPLES).to_pylist()
    return html_page("Data", [
        ("Funnel: documents and characters after each stage and filter",
         html_table(["step", "documents", "characters"], funnel)),
        ("By corpus", html_table(SOURCE_COLUMNS, [[row[key] for key in SOURCE_KEYS] for row in corpus["sources"]])),
        ("Deduplication", html_table(["measure", "value"], [(k.replace("_", " "), v) for k, v in dedup.items()])),
        (f"Removed duplicates (first {DEDUP_EXAMPLES})",
         html_table(["removed", "corpus", "kind", "duplicate of", "its corpus", "estimated Jaccard"],
                    [(r["title"], r["source"], r["kind"], r["duplicate_of_title"], r["duplicate_of_source"],
                      r["similarity"]) for r in examples]))])


def tokenizer_page(tokenizer):
    settings = [(k.replace("_", " "), v) for k, v in tokenizer.items() if not isinstance(v, dict)]
    validation = [(k.replace("_", " "), v) for k, v in tokenizer["validation"].items()]
    return html_page("Tokenizer", [("Training", html_table(["setting", "value"], settings)),
                                   ("Validation split", html_table(["measure", "value"], validation))])


def evaluation_page(bpb, mc_results, probes):
    sections = [("Bits per byte and perplexity on the validation split", html_table(
        ["model", "bits per byte", "perplexity", "tokens", "bytes", "bytes / token"],
        [(model_name(r), r["bits_per_byte"], r["perplexity"], r["tokens"], r["bytes"], r["bytes_per_token"])
         for r in bpb]))]
    sections.append(("Multiple choice, overall", html_table(
        ["model", "set", "shots", "scoring", "accuracy", "questions", "chance", "prompts with fewer shots",
         "too long to score"],
        [(model, name, shots, scoring, f"{accuracy:.1%}", questions, f"{chance:.1%}", shortened, too_long)
         for model, name, shots, scoring, accuracy, questions, chance, shortened, too_long
         in accuracy_rows(mc_results)])))
    for result in mc_results:
        subjects = result["results"][0]["subjects"]
        rows = [(subject, *(f"{s['subjects'][subject]['accuracy']:.1%}" for s in result["results"]),
                 subjects[subject]["questions"]) for subject in subjects]
        sections.append((f"{model_name(result)} on {result['name']}, per subject", html_table(
            ["subject", *(f"{s['shots']}-shot {s['scoring']}" for s in result["results"]), "questions"], rows)))
    if probes:
        sections.append(("Fact probe: the likeliest candidate object, per relation and phrasing (question: the "
                         "answer to the relation's question)", html_table(
                             ["model", "relation", "phrasing", "facts", "accuracy", "chance", "mean rank"],
                             knowledge_rows(probes))))
        sections.append((f"Fact probe: the first {GENERATED_EXAMPLES} questions answered by greedy generation "
                         "(right: the fact's object named, no other candidate)", html_table(
                             ["model", "question", "answer", "right"],
                             [(model_name(p), a["question"], a["reply"], "yes" if a["right"] else "no")
                              for p in probes for a in p.get("generated", [])[:GENERATED_EXAMPLES]])))
    return html_page("Evaluation", sections)


def samples_page(samples):
    models = [model_name(s) for s in samples]
    prompts = [item["prompt"] for item in samples[0]["samples"]]
    answers = [{item["prompt"]: item["answer"] for item in s["samples"]} for s in samples]
    decoding = "; ".join(f"{model_name(s)}: {s['description']}" for s in samples)
    return html_page("Generation samples", [
        (decoding, html_table(["prompt", *models], [(p, *(a.get(p, "") for a in answers)) for p in prompts])),
        ("Each prompt as a chat turn (greedy): does the model keep ChatML?", html_table(
            ["model", "answers ending with <|im_end|>", "answers leaking a role marker", "mean characters"],
            [chat_format_row(s) for s in samples]))])


def chat_format_row(samples):
    checks = samples["chat_format"]
    if checks is None:
        return model_name(samples), "no chat template", "", ""
    return (model_name(samples), f"{checks['ends_with_im_end']:.0%}", f"{checks['leaks_role_marker']:.0%}",
            checks["mean_answer_chars"])


def add_arguments(ap):
    ap.add_argument("--corpus", type=Path, required=True, help="corpus_summary JSON")
    ap.add_argument("--dedup-report", type=Path, required=True, help="dedup's removed-documents Parquet")
    ap.add_argument("--tokenizer", type=Path, required=True, help="tokenizer report JSON")
    ap.add_argument("--pretrain", type=Path, required=True, help="pretraining summary JSON")
    ap.add_argument("--sft", type=Path, required=True, help="SFT summary JSON")
    ap.add_argument("--dpo", type=Path, nargs="?", help="DPO summary JSON, when DPO ran")
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


def run(args, progress_stream):
    corpus, tokenizer = read_json(args.corpus), read_json(args.tokenizer)
    training = {"pretrain": read_json(args.pretrain), "sft": read_json(args.sft)}
    if args.dpo:
        training["dpo"] = read_json(args.dpo)
    if args.continued:
        training["continued pretraining"] = read_json(args.continued)
    expansion = read_json(args.expansion) if args.expansion else None
    bpb, mc_results = [read_json(p) for p in args.bpb], [read_json(p) for p in args.multiple_choice]
    samples, probes = [read_json(p) for p in args.samples], [read_json(p) for p in args.knowledge]
    times = stage_times(args.benchmarks, args.benchmarks_root)
    rows = summary_rows(corpus, tokenizer, expansion, training, bpb, mc_results, probes, times)
    write_json(args.json, [{"section": s, "measure": m, "value": v} for s, m, v in rows])
    first_look = markdown_table(["model", "measure", "value", "compare with"], first_look_rows(bpb, mc_results, probes))
    write_text(args.markdown, "# Run summary\n\n" + opening("dpo_model" if args.dpo else "sft_model") +
               "\n## First look\n\n" + first_look + "\n## Every figure\n\n" +
               markdown_table(["section", "measure", "value"], rows))
    pages = {"summary": html_page("Run summary", [("", html_table(["section", "measure", "value"], rows))]),
             "data": data_page(corpus, args.dedup_report), "tokenizer": tokenizer_page(tokenizer),
             "evaluation": evaluation_page(bpb, mc_results, probes), "samples": samples_page(samples)}
    for name, page in pages.items():
        write_text(args.pages / f"{name}.html", page)
    print(markdown_table(["section", "measure", "value"], rows), file=progress_stream)


if __name__ == "__main__":
    stage_cli("run_summary", __doc__, add_arguments, run)
