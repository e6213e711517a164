# zhwiki-llm: a Chinese Wikipedia dump in, a small Chinese chat model out.
#
#   snakemake --cores all corpus        # clean, deduplicated, simplified train/validation splits
#   snakemake --cores all tokenizer     # a byte-level BPE tokenizer trained on the train split
#   snakemake --cores all tokens        # both splits as token shards for pretraining
#   snakemake --cores all base_model    # a LLaMA-style model pretrained from scratch (results/base_model)
#   snakemake --cores all sft_model     # that model fine-tuned to chat (results/sft_model)
#   snakemake --cores all grpo_model --configfile config.yaml config/presets/grpo.yaml
#                                       # the chat model trained further on rewards it can check
#   snakemake --cores all continued_model --configfile config.yaml config/presets/continued.yaml
#                                       # an existing model with more Chinese tokens, pretrained further
#   snakemake --cores all eval          # both models evaluated; results/summary.md sums up the run
#   snakemake --cores all gguf          # GGUF files for llama.cpp/Ollama and a Modelfile (results/export)
#   snakemake --report results/report.html   # the run as one page (after a run)
#
# Settings: config.yaml (the bundled demo), validated against config/schema.yaml and described
# in config/README.md. Outputs go to results/.


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    shard=r"\d{3}",
    part="(" + "|".join(["zhwiki"] + [c["name"] for c in EXTRA_CORPORA]) + r")-\d{3}",
    split="train|validation",
    model="base_model|sft_model|dpo_model|grpo_model|continued_model",
    tokens="tokens|expanded_tokens",
    set="|".join(MC_SETS) or "(?!)",
    fetched="|".join(map(re.escape, FETCHES)) or "(?!)",
    kind="sft|dpo|grpo",
    gguf_type="|".join(config["export"]["types"]),
    point=r"d\d+-c[0-9.e]+-lr[0-9.e-]+-b\d+-s\d+",


include: "rules/data.smk"
include: "rules/tokenizer.smk"
include: "rules/fetch.smk"
include: "rules/training.smk"
include: "rules/continued.smk"
include: "rules/eval.smk"
include: "rules/export.smk"
include: "rules/scaling.smk"
include: "rules/stage_targets.smk"
include: "rules/slurm.smk"


rule all:
    default_target: True
    input:
        rules.corpus_summary.output,
        rules.tokens_index.output.index.format(tokens="tokens"),
        rules.base_model.output,
        rules.sft_model.output,
        rules.run_summary.output,


rule corpus:
    input:
        train=rules.split.output.train,
        validation=rules.split.output.validation,
        summary=rules.corpus_summary.output.markdown,


rule tokens:
    input:
        index=rules.tokens_index.output.index.format(tokens="tokens"),
        report=rules.tokenizer.output.report,


rule eval:
    input:
        summary=rules.run_summary.output.markdown,
        pages=rules.run_summary.output.summary,


include: "rules/preflight.smk"
