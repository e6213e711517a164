# The data stages: dump -> extract -> convert -> clean -> minhash -> dedup -> split (the corpus).
# Extra local corpora (config corpora.extra) enter through ingest and share every stage after it;
# a {part} is one shard of one corpus: zhwiki-000, textbook-000, ...


DL = "results/download/zhwiki-pages-articles-multistream"
EXTRA_PART_PATTERN = "|".join(rf"{c['name']}-\d{{3}}" for c in EXTRA_CORPORA) or "(?!)"


rule download:
    input:
        sample=lambda wildcards: sample_files(config["download"], SAMPLE_DIR),
    output:
        dump=f"{DL}.xml.bz2",
        index=f"{DL}-index.txt.bz2",
        sha1sums="results/download/zhwiki-sha1sums.txt",
        stats="results/download/stats.json",
    params:
        options=cli_options(config["download"]),
        # the bundled demo's folder, named only when it is the source (a real run's plan names no demo file)
        sample_dir=f"--sample-dir {SAMPLE_DIR}" if config["download"]["source"] == "sample" else "",
        code=code_fingerprint("data.download"),
    log:
        "results/logs/download.log",
    benchmark:
        "results/benchmarks/download.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.download {params.options} {params.sample_dir}"
        " --dump {output.dump} --index {output.index} --sha1sums {output.sha1sums}"
        " --stats {output.stats} --log {log}"


rule extract_shard:
    input:
        # Touching a multi-GB dump must not rerun the DAG, so its mtime is ignored (ancient); a new
        # download rewrites the small sha1sums file, and that is what reruns extraction.
        dump=ancient(rules.download.output.dump),
        index=ancient(rules.download.output.index),
        sha1sums=rules.download.output.sha1sums,
    output:
        docs="results/extract/shard-{shard}.parquet",
        stats="results/extract/shard-{shard}.json",
    params:
        options=cli_options(config["extract"]),
        code=code_fingerprint("data.extract"),
    log:
        "results/logs/extract/shard-{shard}.log",
    benchmark:
        "results/benchmarks/extract/shard-{shard}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.extract --dump {input.dump} --index {input.index}"
        " --shard {wildcards.shard} {params.options}"
        " --out {output.docs} --stats {output.stats} --log {log}"


rule ingest_part:
    input:
        files=lambda wildcards: corpus_files(part_corpus(wildcards)),
    output:
        docs="results/ingest/{part}.parquet",
        stats="results/ingest/{part}.json",
    params:
        name=lambda wildcards: part_corpus(wildcards)["name"],
        shard=lambda wildcards: int(wildcards.part[-3:]),
        options=lambda wildcards: cli_options(part_corpus(wildcards), only=INGEST_KEYS),
        code=code_fingerprint("data.ingest"),
    log:
        "results/logs/ingest/{part}.log",
    benchmark:
        "results/benchmarks/ingest/{part}.tsv"
    wildcard_constraints:
        part=EXTRA_PART_PATTERN,
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.ingest --name {params.name} --files {input.files} {params.options}"
        " --shard {params.shard} --out {output.docs} --stats {output.stats} --log {log}"


rule convert_part:
    input:
        docs=convert_input,
    output:
        docs="results/convert/{part}.parquet",
        stats="results/convert/{part}.json",
    params:
        options=lambda wildcards: cli_options(part_corpus(wildcards), only=("opencc_config",)),
        code=code_fingerprint("data.convert"),
    log:
        "results/logs/convert/{part}.log",
    benchmark:
        "results/benchmarks/convert/{part}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.convert {params.options} --input {input.docs}"
        " --out {output.docs} --stats {output.stats} --log {log}"


rule clean_part:
    input:
        docs=rules.convert_part.output.docs,
    output:
        docs="results/clean/{part}.parquet",
        stats="results/clean/{part}.json",
    params:
        options=lambda wildcards: cli_options(part_corpus(wildcards)["clean"]),
        code=code_fingerprint("data.clean"),
    log:
        "results/logs/clean/{part}.log",
    benchmark:
        "results/benchmarks/clean/{part}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.clean --input {input.docs} {params.options}"
        " --out {output.docs} --stats {output.stats} --log {log}"


rule minhash_part:
    input:
        docs=rules.clean_part.output.docs,
    output:
        signatures="results/minhash/{part}.npz",
    params:
        options=cli_options(config["dedup"], only=("ngram", "num_perm", "seed")),
        code=code_fingerprint("data.minhash"),
    log:
        "results/logs/minhash/{part}.log",
    benchmark:
        "results/benchmarks/minhash/{part}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.minhash --input {input.docs} {params.options}"
        " --out {output.signatures} --log {log}"


rule dedup_band_group:
    input:
        signatures=expand(rules.minhash_part.output.signatures, part=PARTS),
    output:
        pairs=expand("results/dedup/bands/{{group}}/{join_part}.npz", join_part=JOIN_PARTS),
        stats="results/dedup/bands/{group}.json",
    params:
        options=cli_options(config["dedup"], only=("band_jobs", "threshold", "num_perm")),
        corpus_order=" ".join(corpus_weights(config, EXTRA_CORPORA)),
        code=code_fingerprint("data.dedup_bands"),
    log:
        "results/logs/dedup_bands/{group}.log",
    benchmark:
        "results/benchmarks/dedup_bands/{group}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.dedup_bands --signatures {input.signatures} --group {wildcards.group}"
        " {params.options} --corpus-order {params.corpus_order} --out {output.pairs} --stats {output.stats} --log {log}"


rule dedup_exact_group:
    input:
        signatures=expand(rules.minhash_part.output.signatures, part=PARTS),
    output:
        copies="results/dedup/exact/{key_group}.npz",
        stats="results/dedup/exact/{key_group}.json",
    params:
        options=cli_options(config["dedup"], only=("join_jobs",)),
        corpus_order=" ".join(corpus_weights(config, EXTRA_CORPORA)),
        code=code_fingerprint("data.dedup_exact"),
    log:
        "results/logs/dedup_exact/{key_group}.log",
    benchmark:
        "results/benchmarks/dedup_exact/{key_group}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.dedup_exact --signatures {input.signatures} --group {wildcards.key_group}"
        " {params.options} --corpus-order {params.corpus_order} --out {output.copies}"
        " --stats {output.stats} --log {log}"


rule dedup_join_part:
    input:
        signatures=expand(rules.minhash_part.output.signatures, part=PARTS),
        exact=expand(rules.dedup_exact_group.output.copies, key_group=KEY_GROUPS),
        pairs=expand("results/dedup/bands/{group}/{{join_part}}.npz", group=BAND_GROUPS),
        earlier=lambda w: expand("results/dedup/join/{join_part}.parquet", join_part=range(int(w.join_part))),
    output:
        report="results/dedup/join/{join_part}.parquet",
        stats="results/dedup/join/{join_part}.json",
    params:
        corpus_order=" ".join(corpus_weights(config, EXTRA_CORPORA)),
        code=code_fingerprint("data.dedup_join"),
    log:
        "results/logs/dedup_join/{join_part}.log",
    benchmark:
        "results/benchmarks/dedup_join/{join_part}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.dedup_join --signatures {input.signatures} --exact {input.exact}"
        " --pairs {input.pairs} --earlier {input.earlier} --part {wildcards.join_part}"
        " --corpus-order {params.corpus_order} --report {output.report} --stats {output.stats} --log {log}"


rule dedup:
    input:
        exact=expand(rules.dedup_exact_group.output.copies, key_group=KEY_GROUPS),
        parts=expand(rules.dedup_join_part.output.report, join_part=JOIN_PARTS),
        part_stats=expand(rules.dedup_join_part.output.stats, join_part=JOIN_PARTS),
    output:
        report="results/dedup/removed.parquet",
        stats="results/dedup/stats.json",
    params:
        options=cli_options(config["dedup"], only=("threshold", "num_perm")),
        code=code_fingerprint("data.dedup"),
    log:
        "results/logs/dedup.log",
    benchmark:
        "results/benchmarks/dedup.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.dedup --exact {input.exact} --parts {input.parts} --part-stats {input.part_stats}"
        " {params.options} --report {output.report}"
        " --stats {output.stats} --log {log}"


rule split:
    input:
        docs=expand(rules.clean_part.output.docs, part=PARTS),
        removed=rules.dedup.output.report,
    output:
        train="results/corpus/train.parquet",
        validation="results/corpus/validation.parquet",
        stats="results/corpus/split.json",
    params:
        options=cli_options(config["split"]),
        weights=" ".join(f"{name}={weight}" for name, weight in corpus_weights(config, EXTRA_CORPORA).items()),
        code=code_fingerprint("data.split"),
    log:
        "results/logs/split.log",
    benchmark:
        "results/benchmarks/split.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.split --inputs {input.docs} --removed {input.removed}"
        " {params.options} --weights {params.weights}"
        " --train {output.train} --validation {output.validation} --stats {output.stats} --log {log}"


rule corpus_summary:
    input:
        extract=expand(rules.extract_shard.output.stats, shard=SHARDS),
        ingest=expand(rules.ingest_part.output.stats, part=EXTRA_PARTS),
        convert=expand(rules.convert_part.output.stats, part=PARTS),
        clean=expand(rules.clean_part.output.stats, part=PARTS),
        dedup=rules.dedup.output.stats,
        split=rules.split.output.stats,
    output:
        json="results/corpus/summary.json",
        markdown="results/corpus/summary.md",
        plot=report("results/corpus/funnel.png", caption="../report/funnel.rst",
                    category=report_category(2, "Data"),
                    labels=report_labels(page="funnel plot")),
    params:
        code=code_fingerprint("data.corpus_summary"),
    log:
        "results/logs/corpus_summary.log",
    benchmark:
        "results/benchmarks/corpus_summary.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.data.corpus_summary --extract {input.extract} --ingest {input.ingest}"
        " --convert {input.convert}"
        " --clean {input.clean} --dedup {input.dedup} --split {input.split}"
        " --json {output.json} --markdown {output.markdown} --plot {output.plot} --log {log}"
