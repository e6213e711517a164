# Model training: pretraining from scratch on the token shards, then chat fine-tuning (SFT), and the
# optional preference tuning (DPO) and reinforcement learning (GRPO) after it.

# The pretraining command of base_model and of each point of the scaling sweep.
PRETRAIN_COMMAND = (
    "OMP_NUM_THREADS={params.threads_per_process} {params.launcher} -m workflow_scripts.training.pretrain --tokens $(dirname {input.tokens})"
    " --tokenizer {input.tokenizer} {params.options} {params.tracking} --checkpoint-root {params.checkpoints}"
    " --out {output.model} --metrics {output.metrics} --plot {output.plot} --summary {output.summary}"
    " --log {log}"
)


rule base_model:
    input:
        tokens=rules.tokens_index.output.index.format(tokens="tokens"),
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        model=directory("results/base_model"),
        metrics="results/pretrain/metrics.jsonl",
        plot=report("results/pretrain/loss.png", caption="../report/loss.rst",
                    category=report_category(4, "Training"),
                    labels=report_labels(stage="pretraining")),
        summary="results/pretrain/summary.json",
    params:
        launcher=launcher(config["pretrain"]),
        options=cli_options(config["pretrain"], skip=("processes", "gpus", "nodes")),
        tracking=TRACKING_OPTIONS,
        threads_per_process=threads_per_process(config["pretrain"]),
        # Checkpoints live outside the rule's outputs, where a failed job does not remove them.
        checkpoints="results/checkpoints/base_model",
        code=code_fingerprint("training.pretrain", "training.launch"),
    log:
        "results/logs/base_model.log",
    benchmark:
        "results/benchmarks/base_model.tsv"
    # CPU training uses every core it is given, split among the processes (Snakemake would otherwise
    # pin each job to one thread through OMP_NUM_THREADS).
    threads: ALL_CORES
    resources:
        **training_allocation(config["pretrain"]),
    conda:
        "../envs/training.yaml"
    shell:
        PRETRAIN_COMMAND


# One point of the scaling sweep (config scaling, rules/scaling.smk): the pretraining of base_model
# at the point's depth, budget, learning rate, batch and seed.
rule sweep_point:
    input:
        tokens=rules.tokens_index.output.index.format(tokens="tokens"),
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        model=directory("results/sweep/{point}/model"),
        metrics="results/sweep/{point}/metrics.jsonl",
        plot="results/sweep/{point}/loss.png",
        summary="results/sweep/{point}/summary.json",
    params:
        launcher=launcher(config["pretrain"]),
        options=lambda wildcards: cli_options(sweep_settings(config, wildcards.point),
                                              skip=("processes", "gpus", "nodes")),
        tracking=TRACKING_OPTIONS,
        threads_per_process=threads_per_process(config["pretrain"]),
        # Checkpoints live outside the rule's outputs, where a failed job does not remove them.
        checkpoints=lambda wildcards: f"results/checkpoints/sweep/{wildcards.point}",
        code=code_fingerprint("training.pretrain", "training.launch"),
    log:
        "results/logs/sweep/{point}.log",
    benchmark:
        "results/benchmarks/sweep/{point}.tsv"
    threads: ALL_CORES
    resources:
        **training_allocation(config["pretrain"]),
    conda:
        "../envs/training.yaml"
    shell:
        PRETRAIN_COMMAND


rule chat_data_kind:
    input:
        sources=lambda wildcards: [source_input(entry, FETCHED) for entry in as_entries(config[wildcards.kind]["data"])],
    output:
        data="results/chat_data/{kind}.jsonl",
        stats="results/chat_data/{kind}.json",
    params:
        sources=lambda wildcards: chat_sources(as_entries(config[wildcards.kind]["data"]), FETCHED),
        options=lambda wildcards: cli_options(config[wildcards.kind], only=("skip_bad_records", "seed")),
        code=code_fingerprint("training.chat_data"),
    log:
        "results/logs/chat_data/{kind}.log",
    benchmark:
        "results/benchmarks/chat_data/{kind}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.training.chat_data --kind {wildcards.kind} --sources {params.sources:q}"
        " {params.options} --out {output.data} --stats {output.stats} --log {log}"


rule sft_model:
    input:
        model=sft_base(),
        # Read and checked by chat_data first: a bad file fails there and leaves this model in place.
        data=rules.chat_data_kind.output.data.format(kind="sft"),
        replay=sft_replay_input(),
    output:
        model=directory("results/sft_model"),
        metrics="results/sft/metrics.jsonl",
        plot=report("results/sft/loss.png", caption="../report/loss.rst",
                    category=report_category(4, "Training"),
                    labels=report_labels(stage="SFT")),
        summary="results/sft/summary.json",
    params:
        launcher=launcher(config["sft"]),
        replay=lambda wildcards, input: f"--replay-tokens {Path(input.replay[0]).parent}" if input.replay else "",
        options=cli_options(config["sft"], skip=("base", "data", "skip_bad_records", "processes", "gpus")),
        tracking=TRACKING_OPTIONS,
        threads_per_process=threads_per_process(config["sft"]),
        checkpoints="results/checkpoints/sft_model",
        code=code_fingerprint("training.sft", "training.launch"),
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
        "OMP_NUM_THREADS={params.threads_per_process} {params.launcher} -m workflow_scripts.training.sft"
        " --model {input.model} --data {input.data}:1 {params.replay} {params.options} {params.tracking}"
        " --checkpoint-root {params.checkpoints}"
        " --out {output.model} --metrics {output.metrics} --plot {output.plot} --summary {output.summary}"
        " --log {log}"


rule dpo_model:
    input:
        model=rules.sft_model.output.model,
        data=rules.chat_data_kind.output.data.format(kind="dpo"),
    output:
        model=directory("results/dpo_model"),
        metrics="results/dpo/metrics.jsonl",
        plot=report("results/dpo/loss.png", category=report_category(4, "Training"), labels=report_labels(stage="DPO")),
        summary="results/dpo/summary.json",
    params:
        launcher=launcher(config["dpo"]),
        options=cli_options(config["dpo"], skip=("enabled", "data", "skip_bad_records", "gpus")),
        tracking=TRACKING_OPTIONS,
        checkpoints="results/checkpoints/dpo_model",
        code=code_fingerprint("training.dpo", "training.launch"),
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
        "OMP_NUM_THREADS={threads} {params.launcher} -m workflow_scripts.training.dpo --model {input.model}"
        " --data {input.data} {params.options} {params.tracking} --checkpoint-root {params.checkpoints}"
        " --out {output.model}"
        " --metrics {output.metrics} --plot {output.plot} --summary {output.summary} --log {log}"


rule grpo_model:
    input:
        model=grpo_start(),
        # Read and checked by chat_data first: a question without its answer fails there.
        data=rules.chat_data_kind.output.data.format(kind="grpo"),
        rewards=user_reward_files(config["grpo"]["rewards"]),
    output:
        model=directory("results/grpo_model"),
        metrics="results/grpo/metrics.jsonl",
        plot=report("results/grpo/reward.png", caption="../report/grpo.rst", category=report_category(4, "Training"),
                    labels=report_labels(stage="GRPO")),
        summary="results/grpo/summary.json",
    params:
        launcher=launcher(config["grpo"]),
        options=cli_options(config["grpo"], skip=("enabled", "data", "skip_bad_records", "gpus")),
        tracking=TRACKING_OPTIONS,
        checkpoints="results/checkpoints/grpo_model",
        code=code_fingerprint("training.grpo", "training.launch"),
    log:
        "results/logs/grpo_model.log",
    benchmark:
        "results/benchmarks/grpo_model.tsv"
    threads: ALL_CORES
    resources:
        gpu=config["grpo"]["gpus"],
    conda:
        "../envs/training.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} -m workflow_scripts.training.grpo --model {input.model}"
        " --data {input.data} {params.options} {params.tracking} --checkpoint-root {params.checkpoints}"
        " --out {output.model}"
        " --metrics {output.metrics} --plot {output.plot} --summary {output.summary} --log {log}"
