# Model training: pretraining from scratch on the token shards, then chat fine-tuning (SFT).


rule base_model:
    input:
        tokens=rules.tokens_index.output.index.format(tokens="tokens"),
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        model=directory("results/base_model"),
        metrics="results/pretrain/metrics.jsonl",
        plot=report("results/pretrain/loss.png", caption="../report/loss.rst", category="4. Training",
                    labels={"stage": "pretraining"}),
        summary="results/pretrain/summary.json",
    params:
        launcher=launcher("pretrain"),
        options=cli_options(config["pretrain"], skip=("processes", "gpus", "nodes")),
        threads_per_process=threads_per_process("pretrain"),
        # Checkpoints live outside the rule's outputs, where a failed job does not remove them.
        checkpoints="results/checkpoints/base_model",
        code=code_version("pretrain", "training"),
    log:
        "results/logs/base_model.log",
    benchmark:
        "results/benchmarks/base_model.tsv"
    # CPU training uses every core it is given, split among the processes (Snakemake would otherwise
    # pin each job to one thread through OMP_NUM_THREADS).
    threads: ALL_CORES
    resources:
        gpu=config["pretrain"]["gpus"],
        nodes=config["pretrain"]["nodes"],
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={params.threads_per_process} {params.launcher} -m workflow_scripts.pretrain --tokens $(dirname {input.tokens})"
        " --tokenizer {input.tokenizer} {params.options} --checkpoint-root {params.checkpoints}"
        " --out {output.model} --metrics {output.metrics} --plot {output.plot} --summary {output.summary}"
        " --log {log}"


rule sft_model:
    input:
        model=sft_base(),
        data=[entry["path"] for entry in config["sft"]["data"]],
    output:
        model=directory("results/sft_model"),
        metrics="results/sft/metrics.jsonl",
        plot=report("results/sft/loss.png", caption="../report/loss.rst", category="4. Training",
                    labels={"stage": "SFT"}),
        summary="results/sft/summary.json",
    params:
        launcher=launcher("sft"),
        data=sft_data_args(),
        options=cli_options(config["sft"], skip=("base", "data", "processes", "gpus")),
        threads_per_process=threads_per_process("sft"),
        checkpoints="results/checkpoints/sft_model",
        code=code_version("sft", "sft_data", "training"),
    log:
        "results/logs/sft_model.log",
    benchmark:
        "results/benchmarks/sft_model.tsv"
    threads: ALL_CORES
    resources:
        gpu=config["sft"]["gpus"],
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={params.threads_per_process} {params.launcher} -m workflow_scripts.sft"
        " --model {input.model} --data {params.data} {params.options} --checkpoint-root {params.checkpoints}"
        " --out {output.model} --metrics {output.metrics} --plot {output.plot} --summary {output.summary}"
        " --log {log}"


rule dpo_model:
    input:
        model=rules.sft_model.output.model,
        data=config["dpo"]["data"],
    output:
        model=directory("results/dpo_model"),
        metrics="results/dpo/metrics.jsonl",
        plot=report("results/dpo/loss.png", category="4. Training", labels={"stage": "DPO"}),
        summary="results/dpo/summary.json",
    params:
        launcher=launcher("dpo"),
        options=cli_options(config["dpo"], skip=("enabled", "data", "gpus")),
        checkpoints="results/checkpoints/dpo_model",
        code=code_version("dpo", "sft_data", "training"),
    log:
        "results/logs/dpo_model.log",
    benchmark:
        "results/benchmarks/dpo_model.tsv"
    threads: ALL_CORES
    resources:
        gpu=config["dpo"]["gpus"],
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} -m workflow_scripts.dpo --model {input.model}"
        " --data {input.data} {params.options} --checkpoint-root {params.checkpoints} --out {output.model}"
        " --metrics {output.metrics} --plot {output.plot} --summary {output.summary} --log {log}"
