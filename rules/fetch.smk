# Data given by URL in sft.data, dpo.data, grpo.data or eval.multiple_choice: fetched once, verified, unpacked.


rule fetch_url:
    output:
        folder=directory(f"{FETCHED}/{{fetched}}"),
        stats=f"{FETCHED}/{{fetched}}.json",
    params:
        url=lambda wildcards: mirrored(FETCHES[wildcards.fetched]["url"], config["fetch"]["mirrors"]),
        sha256=lambda wildcards: FETCHES[wildcards.fetched].get("sha256", ""),
        # The download lives outside the outputs, so a failed job leaves it to be resumed, and a
        # new sha256 checks it instead of fetching the same bytes again.
        downloads=lambda wildcards: f"{FETCHED}/.downloads/{url_key(FETCHES[wildcards.fetched]['url'])}",
        options=cli_options(config["fetch"], skip=("mirrors",)),
        code=code_fingerprint("fetch.fetch_data"),
    log:
        "results/logs/fetch_data/{fetched}.log",
    benchmark:
        "results/benchmarks/fetch_data/{fetched}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.fetch.fetch_data --url {params.url:q} --sha256 '{params.sha256}'"
        " {params.options}"
        " --out {output.folder} --downloads {params.downloads} --stats {output.stats} --log {log}"
