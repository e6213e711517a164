# The tokenizer and the token shards that pretraining reads. {tokens} is `tokens` (this workflow's
# tokenizer) or `expanded_tokens` (the expanded vocabulary of rules/continued.smk).


rule tokenizer:
    input:
        train=rules.split.output.train,
        validation=rules.split.output.validation,
    output:
        tokenizer=directory("results/tokenizer"),
        report="results/tokenizer_report.json",
    params:
        options=cli_options(config["tokenizer"]),
        code=code_fingerprint("tokenizer.tokenizer"),
    log:
        "results/logs/tokenizer.log",
    benchmark:
        "results/benchmarks/tokenizer.tsv"
    threads: ALL_CORES
    conda:
        "../envs/tokenizer.yaml"
    shell:
        "RAYON_NUM_THREADS={threads} python -m workflow_scripts.tokenizer.tokenizer"
        " --train {input.train} --validation {input.validation} {params.options}"
        " --out {output.tokenizer} --report {output.report} --log {log}"


rule token_shard:
    input:
        tokenizer=lambda wildcards: TOKENIZERS[wildcards.tokens],
        docs="results/corpus/{split}.parquet",
    output:
        tokens="results/{tokens}/{split}-{shard}.bin",
        index="results/{tokens}/{split}-{shard}.json",
    params:
        options=cli_options(config["tokens"]),
        code=code_fingerprint("tokenizer.tokens"),
    log:
        "results/logs/{tokens}/{split}-{shard}.log",
    benchmark:
        "results/benchmarks/{tokens}/{split}-{shard}.tsv"
    conda:
        "../envs/tokenizer.yaml"
    shell:
        "RAYON_NUM_THREADS={threads} python -m workflow_scripts.tokenizer.tokens --tokenizer {input.tokenizer}"
        " --input {input.docs} --shard {wildcards.shard} {params.options}"
        " --out {output.tokens} --index {output.index} --log {log}"


rule tokens_index:
    input:
        shards=lambda wildcards: expand(rules.token_shard.output.index, tokens=wildcards.tokens, split=SPLITS,
                                        shard=TOKEN_SHARDS),
    output:
        index="results/{tokens}/index.json",
    params:
        code=code_fingerprint("tokenizer.tokens_index"),
    log:
        "results/logs/{tokens}_index.log",
    benchmark:
        "results/benchmarks/{tokens}_index.tsv"
    conda:
        "../envs/tokenizer.yaml"
    shell:
        "python -m workflow_scripts.tokenizer.tokens_index --shards {input.shards} --out {output.index} --log {log}"
