# Evaluation of the base and the SFT model, and the run summary the report is built from.


rule bits_per_byte_model:
    input:
        model="results/{model}",
        text=rules.split.output.validation,
    output:
        "results/eval/{model}/bpb.json",
    params:
        options=cli_options(config["eval"], only=("batch_size", "max_documents", "seq_len")),
        code=code_fingerprint("eval.bits_per_byte"),
    log:
        "results/logs/bits_per_byte/{model}.log",
    benchmark:
        "results/benchmarks/bits_per_byte/{model}.tsv"
    threads: ALL_CORES
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.eval.bits_per_byte --model {input.model}"
        " --text {input.text} {params.options} --out {output} --log {log}"


rule multiple_choice_model:
    input:
        model="results/{model}",
        data=lambda wildcards: multiple_choice_inputs(MC_ENTRIES[wildcards.set], FETCHED),
    output:
        json="results/eval/{model}/mc-{set}.json",
        markdown="results/eval/{model}/mc-{set}.md",
    params:
        data=lambda wildcards: MC_SETS[wildcards.set],
        subjects=lambda wildcards: " ".join(MC_ENTRIES[wildcards.set].get("subjects", [])),
        options=cli_options(config["eval"], only=("shots", "scoring", "max_prompt_tokens")),
        code=code_fingerprint("eval.multiple_choice"),
    log:
        "results/logs/multiple_choice/{model}-{set}.log",
    benchmark:
        "results/benchmarks/multiple_choice/{model}-{set}.tsv"
    threads: ALL_CORES
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.eval.multiple_choice --model {input.model}"
        " --data {params.data} --name {wildcards.set} --subjects {params.subjects} {params.options}"
        " --out {output.json} --markdown {output.markdown} --log {log}"


rule samples_model:
    input:
        model="results/{model}",
        prompts=config["eval"]["prompts"],
    output:
        json="results/eval/{model}/samples.json",
        markdown="results/eval/{model}/samples.md",
    params:
        style=lambda wildcards: answer_style(wildcards.model),
        options=cli_options(config["eval"], only=("max_new_tokens", "repetition_penalty")),
        code=code_fingerprint("eval.samples"),
    log:
        "results/logs/samples/{model}.log",
    benchmark:
        "results/benchmarks/samples/{model}.tsv"
    threads: ALL_CORES
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.eval.samples --model {input.model}"
        " --prompts {input.prompts} --style {params.style} {params.options}"
        " --out {output.json} --markdown {output.markdown}"
        " --log {log}"


rule knowledge_model:
    input:
        model="results/{model}",
        facts=FACTS or [],
    output:
        json="results/eval/{model}/knowledge.json",
        markdown="results/eval/{model}/knowledge.md",
    params:
        style=lambda wildcards: answer_style(wildcards.model),
        code=code_fingerprint("eval.knowledge"),
    log:
        "results/logs/knowledge/{model}.log",
    benchmark:
        "results/benchmarks/knowledge/{model}.tsv"
    threads: ALL_CORES
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m workflow_scripts.eval.knowledge --model {input.model}"
        " --facts {input.facts} --style {params.style} --out {output.json} --markdown {output.markdown} --log {log}"


rule run_summary:
    input:
        corpus=rules.corpus_summary.output.json,
        dedup_report=rules.dedup.output.report,
        tokenizer=rules.tokenizer.output.report,
        pretrain=rules.base_model.output.summary,
        sft=rules.sft_model.output.summary,
        dpo=[rules.dpo_model.output.summary] if "dpo_model" in MODELS else [],
        grpo=[rules.grpo_model.output.summary] if "grpo_model" in MODELS else [],
        continued=[rules.continued_model.output.summary] if CONTINUED else [],
        expansion=[rules.expand_vocab.output.report] if CONTINUED else [],
        bpb=expand(rules.bits_per_byte_model.output, model=MODELS),
        multiple_choice=expand(rules.multiple_choice_model.output.json, model=MODELS, set=MC_SETS),
        samples=expand(rules.samples_model.output.json, model=MODELS),
        knowledge=expand(rules.knowledge_model.output.json, model=MODELS) if FACTS else [],
        benchmarks=stage_benchmarks,
    output:
        json="results/summary.json",
        markdown="results/summary.md",
        summary=report("results/report/summary.html", category=report_category(1, "Run summary"),
                       labels=report_labels(page="summary")),
        data=report("results/report/data.html", category=report_category(2, "Data"),
                    labels=report_labels(page="funnel and dedup")),
        tokenizer=report("results/report/tokenizer.html", category=report_category(3, "Tokenizer"),
                         labels=report_labels(page="figures")),
        evaluation=report("results/report/evaluation.html", caption="../report/evaluation.rst",
                          category=report_category(5, "Evaluation"),
                          labels=report_labels(page="bits per byte and accuracy")),
        samples=report("results/report/samples.html", caption="../report/evaluation.rst",
                       category=report_category(5, "Evaluation"), labels=report_labels(page="samples")),
    params:
        options=cli_options(config["eval"], only=("report_languages",)),
        code=code_fingerprint("eval.run_summary"),
    log:
        "results/logs/run_summary.log",
    benchmark:
        "results/benchmarks/run_summary.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.eval.run_summary --corpus {input.corpus} --dedup-report {input.dedup_report}"
        " --tokenizer {input.tokenizer} --pretrain {input.pretrain} --sft {input.sft} --dpo {input.dpo} --grpo {input.grpo}"
        " --continued {input.continued} --expansion {input.expansion}"
        " --bpb {input.bpb}"
        " --multiple-choice {input.multiple_choice} --knowledge {input.knowledge} --samples {input.samples}"
        " --benchmarks {input.benchmarks}"
        " --json {output.json} --markdown {output.markdown} --pages $(dirname {output.summary}) {params.options}"
        " --log {log}"
