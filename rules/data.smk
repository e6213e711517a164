# The data stages: dump -> extract -> convert -> clean -> minhash -> dedup -> split (the corpus).


rule download:
    input:
        sample=sample_files,
    output:
        dump=f"{DL}.xml.bz2",
        index=f"{DL}-index.txt.bz2",
        sha1sums="results/download/zhwiki-sha1sums.txt",
        stats="results/download/stats.json",
    params:
        source=config["download"]["source"],
        mirror=config["download"]["mirror"],
        date=config["download"]["date"],
        sample_dir=SAMPLE_DIR,
        local=local_dump_args(),
        retries=config["download"]["retries"],
        timeout=config["download"]["timeout_s"],
        code=code_version("download"),
    log:
        "results/logs/download.log",
    benchmark:
        "results/benchmarks/download.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.download --source {params.source} --mirror {params.mirror}"
        " --date {params.date} --sample-dir {params.sample_dir} {params.local}"
        " --retries {params.retries} --timeout {params.timeout}"
        " --dump {output.dump} --index {output.index} --sha1sums {output.sha1sums}"
        " --stats {output.stats} --log {log}"


rule extract:
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
        shards=len(SHARDS),
        flags=" ".join(
            [
                flag(config["extract"]["keep_disambiguation"], "--keep-disambiguation"),
                flag(not config["extract"]["keep_headings"], "--drop-headings"),
            ]
        ),
        code=code_version("extract"),
    log:
        "results/logs/extract/shard-{shard}.log",
    benchmark:
        "results/benchmarks/extract/shard-{shard}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.extract --dump {input.dump} --index {input.index}"
        " --shard {wildcards.shard} --shards {params.shards} {params.flags}"
        " --out {output.docs} --stats {output.stats} --log {log}"


rule convert:
    input:
        docs=rules.extract.output.docs,
    output:
        docs="results/convert/shard-{shard}.parquet",
        stats="results/convert/shard-{shard}.json",
    params:
        opencc_config=config["convert"]["opencc_config"],
        code=code_version("convert"),
    log:
        "results/logs/convert/shard-{shard}.log",
    benchmark:
        "results/benchmarks/convert/shard-{shard}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.convert --config {params.opencc_config} --input {input.docs}"
        " --out {output.docs} --stats {output.stats} --log {log}"


rule clean:
    input:
        docs=rules.convert.output.docs,
    output:
        docs="results/clean/shard-{shard}.parquet",
        stats="results/clean/shard-{shard}.json",
    params:
        min_chars=config["clean"]["min_chars"],
        min_han_fraction=config["clean"]["min_han_fraction"],
        max_duplicate_line_fraction=config["clean"]["max_duplicate_line_fraction"],
        repetition_ngram=config["clean"]["repetition_ngram"],
        max_repeated_ngram_fraction=config["clean"]["max_repeated_ngram_fraction"],
        code=code_version("clean"),
    log:
        "results/logs/clean/shard-{shard}.log",
    benchmark:
        "results/benchmarks/clean/shard-{shard}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.clean --input {input.docs} --min-chars {params.min_chars}"
        " --min-han-fraction {params.min_han_fraction}"
        " --max-duplicate-line-fraction {params.max_duplicate_line_fraction}"
        " --repetition-ngram {params.repetition_ngram}"
        " --max-repeated-ngram-fraction {params.max_repeated_ngram_fraction}"
        " --out {output.docs} --stats {output.stats} --log {log}"


rule minhash:
    input:
        docs=rules.clean.output.docs,
    output:
        signatures="results/minhash/shard-{shard}.npz",
    params:
        ngram=config["dedup"]["ngram"],
        num_perm=config["dedup"]["num_perm"],
        seed=config["dedup"]["seed"],
        code=code_version("minhash"),
    log:
        "results/logs/minhash/shard-{shard}.log",
    benchmark:
        "results/benchmarks/minhash/shard-{shard}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.minhash --input {input.docs} --ngram {params.ngram}"
        " --num-perm {params.num_perm} --seed {params.seed} --out {output.signatures} --log {log}"


rule dedup:
    input:
        signatures=expand(rules.minhash.output.signatures, shard=SHARDS),
    output:
        report="results/dedup/removed.parquet",
        stats="results/dedup/stats.json",
    params:
        threshold=config["dedup"]["threshold"],
        num_perm=config["dedup"]["num_perm"],
        seed=config["dedup"]["seed"],
        code=code_version("dedup", "minhash"),
    log:
        "results/logs/dedup.log",
    benchmark:
        "results/benchmarks/dedup.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.dedup --signatures {input.signatures} --threshold {params.threshold}"
        " --num-perm {params.num_perm} --seed {params.seed}"
        " --report {output.report} --stats {output.stats} --log {log}"


rule split:
    input:
        docs=expand(rules.clean.output.docs, shard=SHARDS),
        removed=rules.dedup.output.report,
    output:
        train="results/corpus/train.parquet",
        validation="results/corpus/validation.parquet",
        stats="results/corpus/split.json",
    params:
        validation_fraction=config["split"]["validation_fraction"],
        seed=config["split"]["seed"],
        code=code_version("split"),
    log:
        "results/logs/split.log",
    benchmark:
        "results/benchmarks/split.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.split --inputs {input.docs} --removed {input.removed}"
        " --validation-fraction {params.validation_fraction} --seed {params.seed}"
        " --train {output.train} --validation {output.validation} --stats {output.stats} --log {log}"


rule corpus_summary:
    input:
        extract=expand(rules.extract.output.stats, shard=SHARDS),
        convert=expand(rules.convert.output.stats, shard=SHARDS),
        clean=expand(rules.clean.output.stats, shard=SHARDS),
        dedup=rules.dedup.output.stats,
        split=rules.split.output.stats,
    output:
        json="results/corpus/summary.json",
        markdown="results/corpus/summary.md",
        plot=report("results/corpus/funnel.png", caption="../report/funnel.rst", category="2. Data",
                    labels={"page": "funnel plot"}),
    params:
        code=code_version("corpus_summary"),
    log:
        "results/logs/corpus_summary.log",
    benchmark:
        "results/benchmarks/corpus_summary.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.corpus_summary --extract {input.extract} --convert {input.convert}"
        " --clean {input.clean} --dedup {input.dedup} --split {input.split}"
        " --json {output.json} --markdown {output.markdown} --plot {output.plot} --log {log}"
