# Continued pretraining of an existing model with an expanded Chinese vocabulary (the
# Chinese-LLaMA-Alpaca recipe; config continued_pretrain, preset config/presets/continued.yaml).


rule expand_vocab:
    input:
        base=config["continued_pretrain"]["base"] or [],
        train=rules.split.output.train,
        validation=rules.split.output.validation,
    output:
        model=directory("results/expanded_base"),
        report=report("results/expand/report.json", category=report_category(3, "Tokenizer"),
                      labels=report_labels(page="vocabulary expansion")),
    params:
        options=cli_options(config["continued_pretrain"], only=("vocab_size", "max_chars", "init")),
        code=code_fingerprint("continued.expand_vocab"),
    log:
        "results/logs/expand_vocab.log",
    benchmark:
        "results/benchmarks/expand_vocab.tsv"
    threads: ALL_CORES
    conda:
        "../envs/training.yaml"
    shell:
        "RAYON_NUM_THREADS={threads} python -m workflow_scripts.continued.expand_vocab --base {input.base}"
        " --train {input.train} --validation {input.validation} {params.options}"
        " --out {output.model} --report {output.report}"
        " --log {log}"


rule continued_model:
    input:
        model=rules.expand_vocab.output.model,
        expansion=rules.expand_vocab.output.report,
        tokens=rules.tokens_index.output.index.format(tokens="expanded_tokens"),
    output:
        model=directory("results/continued_model"),
        metrics="results/continued/metrics.jsonl",
        plot=report("results/continued/loss.png", caption="../report/loss.rst",
                    category=report_category(4, "Training"),
                    labels=report_labels(stage="continued pretraining")),
        summary="results/continued/summary.json",
    params:
        launcher=launcher(config["continued_pretrain"]),
        options=cli_options(config["continued_pretrain"], skip=CONTINUED_EXPANSION_KEYS),
        tracking=TRACKING_OPTIONS,
        threads_per_process=threads_per_process(config["continued_pretrain"]),
        checkpoints="results/checkpoints/continued_model",
        code=code_fingerprint("continued.continued_pretrain", "training.launch"),
    log:
        "results/logs/continued_model.log",
    benchmark:
        "results/benchmarks/continued_model.tsv"
    threads: ALL_CORES
    resources:
        gpu=config["continued_pretrain"]["gpus"],
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={params.threads_per_process} {params.launcher} -m workflow_scripts.continued.continued_pretrain"
        " --model {input.model} --expansion {input.expansion} --tokens $(dirname {input.tokens}) {params.options}"
        " {params.tracking}"
        " --checkpoint-root {params.checkpoints} --out {output.model} --metrics {output.metrics}"
        " --plot {output.plot} --summary {output.summary} --log {log}"
