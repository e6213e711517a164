"""The CPU rehearsal: the whole recipe on the demo with config/presets/rehearsal.yaml, and whether
the chat model learnt the demo country's facts.

    python benchmarks/rehearsal.py --workdir /tmp/rehearsal

Copies this checkout's files into --workdir (which must not exist), runs
`snakemake --cores 2 all --configfile config.yaml config/presets/rehearsal.yaml` there and times it.
Then checks the targets of issue 16: the SFT model's demo multiple-choice accuracy (the better of
letter and cloze scoring) at least 60 %; its greedy answers to the demo prompts right for at least 6
of 9, each checked against the demo world (the answer names the city or person asked about, the fact
the prompt asks for, and no other value of its kind); its validation bits per byte within 10 % of
the base model's; all in at most 20 minutes. Beside them, a probe of what pretraining stored: the
base model's likeliest province after "{city}位于" (of 12) and field after "{person}是一位" (of 14). The
questions and prompts are about cities and people the SFT data never mentions
(World.evaluated_cities, World.evaluated_people). --measure-only checks a run this script made
before in --workdir again (with its recorded time), e.g. after a change to the checks. Writes
benchmarks/results/rehearsal.{json,md}.
"""
import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from results_io import RESULTS, provenance, save

REPO = RESULTS.parents[1]
sys.path.insert(0, str(REPO))
from workflow_scripts.demo_data.make_demo_dump import (CLIMATES, FIELDS, INDUSTRIES, World,  # noqa: E402
                                                       city_facts, person_facts)
from workflow_scripts.demo_data.make_demo_sft import CITY_QA, PERSON_QA  # noqa: E402

TARGETS = {"minutes": 20, "accuracy": 0.60, "prompts_right": 6, "bpb_increase": 0.10}


def expectations(world):
    """[(prompt pattern, entities by name, expected values of a fact, the values it competes with)]:
    what a right answer to each kind of demo prompt must say."""
    cities = {c["name"]: city_facts(c) for c in world.cities}
    people = {p["name"]: person_facts(p) for p in world.people}
    provinces, rivers = world.provinces, world.rivers
    names = list(people)
    city_fact = {"{name}位于哪个省？": ("province", provinces), "{name}有多少人口？": ("population", None),
                 "{name}是哪一年建立的？": ("founded", None), "{name}的主要产业有哪些？": ("industries", INDUSTRIES),
                 "{name}属于什么气候？": ("climate", CLIMATES), "哪条河流经{name}？": ("river", rivers),
                 "请介绍一下{name}。": ("province", provinces)}
    person_fact = {"{name}是谁？": ("field", FIELDS), "{name}研究什么？": ("field", FIELDS),
                   "{name}的老师是谁？": ("teacher", names), "{name}活了多少岁？": ("age", None)}
    assert set(city_fact) >= {q for q, _ in CITY_QA} and set(person_fact) == {q for q, _ in PERSON_QA}
    return [(template, entities, key, rivals) for facts, entities in ((city_fact, cities), (person_fact, people))
            for template, (key, rivals) in facts.items()]


def check_answer(prompt, answer, world):
    """(right, what was expected) for one greedy answer."""
    for template, entities, key, rivals in expectations(world):
        match = re.fullmatch(re.escape(template).replace(re.escape("{name}"), "(.+)"), prompt.strip())
        if match and match.group(1) in entities:
            value = entities[match.group(1)][key]
            expected = [str(v) for v in value] if isinstance(value, list) else [str(value)]
            said = answer.replace(match.group(1), "")  # the subject's own name is no rival answer
            wrong = [r for r in rivals if r not in expected and r in said] if rivals else \
                [n for n in re.findall(r"\d+", said) if n not in expected]
            about_subject = match.group(1) in answer
            return about_subject and all(e in said for e in expected) and not wrong, "、".join(expected)
    raise ValueError(f"no demo prompt template matches {prompt!r}")


def run_workflow(workdir: Path):
    workdir.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "--null", "-cf", "-", "-T", "-"], cwd=REPO, input=files, check=True,
                   stdout=open(workdir / "files.tar", "wb"))
    subprocess.run(["tar", "-xf", "files.tar"], cwd=workdir, check=True)
    started = time.time()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "all", "--configfile", "config.yaml",
                    "config/presets/rehearsal.yaml"], cwd=workdir, check=True, capture_output=True)
    minutes = (time.time() - started) / 60
    (workdir / "minutes.txt").write_text(f"{minutes:.2f}\n")
    return minutes


def recall(model_dir, world):
    """Share of evaluated cities and people whose province / field the base model finds likeliest as
    the continuation of a plain sentence: what pretraining stored, asked in a phrasing it read."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)

    @torch.no_grad()
    def logprob(prefix, option):
        context, ids = tokenizer.encode(prefix), tokenizer.encode(option)
        logits = torch.log_softmax(model(torch.tensor([context + ids])).logits[0, :-1].float(), -1)
        return sum(logits[len(context) - 1 + i, t].item() for i, t in enumerate(ids))

    def share(form, entities, key, options):
        return sum(max(options, key=lambda o: logprob(form.format(**e), o)) == e[key] for e in entities) / len(entities)
    return {"province_of_12": share("{name}位于", world.evaluated_cities, "province", world.provinces),
            "field_of_14": share("{name}是一位", world.evaluated_people, "field", FIELDS)}


def read(workdir, model, name):
    return json.loads((workdir / "results" / "eval" / model / name).read_text())


def measure(workdir, minutes):
    world = World(random.Random(20261101))
    mc = read(workdir, "sft_model", "mc-demo.json")["results"]
    samples = read(workdir, "sft_model", "samples.json")["samples"]
    answers = [{"prompt": s["prompt"], "answer": s["answer"], **dict(zip(("right", "expected"),
                                                                       check_answer(s["prompt"], s["answer"], world)))}
               for s in samples]
    base_bpb = read(workdir, "base_model", "bpb.json")["bits_per_byte"]
    sft_bpb = read(workdir, "sft_model", "bpb.json")["bits_per_byte"]
    return {"minutes": round(minutes, 1), "multiple_choice": [{k: r[k] for k in ("shots", "scoring", "overall")}
                                                               for r in mc],
            "best_accuracy": max(r["overall"] for r in mc), "answers": answers,
            "prompts_right": sum(a["right"] for a in answers), "base_bpb": base_bpb, "sft_bpb": sft_bpb,
            "bpb_increase": sft_bpb / base_bpb - 1, "base_recall": recall(workdir / "results/base_model", world),
            "base_multiple_choice": [{k: r[k] for k in ("shots", "scoring", "overall")}
                                     for r in read(workdir, "base_model", "mc-demo.json")["results"]]}


def verdicts(m):
    return {"minutes": m["minutes"] <= TARGETS["minutes"], "accuracy": m["best_accuracy"] >= TARGETS["accuracy"],
            "prompts_right": m["prompts_right"] >= TARGETS["prompts_right"],
            "bpb_increase": m["bpb_increase"] <= TARGETS["bpb_increase"]}


def markdown(m, passed):
    ok = {True: "met", False: "**not met**"}
    lines = ["# CPU rehearsal: does the chain learn the demo country's facts?", "",
             "`snakemake --cores 2 all --configfile config.yaml config/presets/rehearsal.yaml` on the demo dump "
             "(4.1M-parameter model). Questions and prompts are about cities and people the SFT data never "
             "mentions; chance is 25 %.", "",
             "| target | measured | |", "|---|---|---|",
             f"| whole run ≤ {TARGETS['minutes']} min | {m['minutes']} min | {ok[passed['minutes']]} |",
             f"| SFT model, demo multiple choice ≥ 60 % (better scoring) | {m['best_accuracy']:.1%} | "
             f"{ok[passed['accuracy']]} |",
             f"| greedy prompt answers right ≥ 6 of 9 | {m['prompts_right']} of {len(m['answers'])} | "
             f"{ok[passed['prompts_right']]} |",
             f"| SFT bits per byte within 10 % of base | {m['sft_bpb']:.3f} vs {m['base_bpb']:.3f} "
             f"({m['bpb_increase']:+.1%}) | {ok[passed['bpb_increase']]} |", "",
             "What pretraining stored (base model, likeliest continuation of a plain sentence): province of "
             f"\"{{city}}位于\" {m['base_recall']['province_of_12']:.0%} (chance 8 %), field of \"{{person}}是一位\" "
             f"{m['base_recall']['field_of_14']:.0%} (chance 7 %).", "",
             "| model | shots | scoring | accuracy |", "|---|---:|---|---:|"]
    for model, results in (("base", m["base_multiple_choice"]), ("SFT", m["multiple_choice"])):
        lines += [f"| {model} | {r['shots']} | {r['scoring']} | {r['overall']:.1%} |" for r in results]
    lines += ["", "| prompt | greedy answer of the SFT model | expected | right |", "|---|---|---|---|"]
    lines += [f"| {a['prompt']} | {a['answer'].replace('|', '/')} | {a['expected']} | {'yes' if a['right'] else 'no'} |"
              for a in m["answers"]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="a new directory for the run")
    ap.add_argument("--measure-only", action="store_true", help="check the run already in --workdir")
    args = ap.parse_args()
    minutes = float((args.workdir / "minutes.txt").read_text()) if args.measure_only else run_workflow(args.workdir)
    m = measure(args.workdir, minutes)
    passed = verdicts(m)
    save("rehearsal", {**provenance(), "targets": TARGETS, "passed": passed, **m}, markdown(m, passed))
    sys.exit(0 if all(passed.values()) else 1)


if __name__ == "__main__":
    main()
