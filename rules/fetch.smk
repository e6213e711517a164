# Data given by URL in sft.data, dpo.data or eval.multiple_choice: fetched once, verified, unpacked.


rule fetch_data:
    output:
        folder=directory(f"{FETCHED}/{{fetched}}"),
        stats=f"{FETCHED}/{{fetched}}.json",
    params:
        url=lambda wildcards: FETCHES[wildcards.fetched]["url"],
        sha256=lambda wildcards: FETCHES[wildcards.fetched].get("sha256", ""),
        # The partial download lives outside the outputs, so a failed job leaves it to be resumed.
        partial=f"{FETCHED}/.partial/{{fetched}}",
        code=code_fingerprint("fetch_data"),
    log:
        "results/logs/fetch_data/{fetched}.log",
    benchmark:
        "results/benchmarks/fetch_data/{fetched}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.fetch_data --url {params.url:q} --sha256 '{params.sha256}'"
        " --out {output.folder} --partial {params.partial} --stats {output.stats} --log {log}"
