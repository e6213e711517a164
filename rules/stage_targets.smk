# Every stage as a target by its name: `snakemake --cores all extract` runs all of extract's jobs
# (Snakemake cannot name a rule with wildcards as a target, so each stage's jobs are the rule
# <stage>_<unit>: extract_shard, clean_part, multiple_choice_model, ...). Rerun one stage alone:
# `snakemake --cores all clean --forcerun clean_part`.


rule extract:
    input:
        expand(rules.extract_shard.output.docs, shard=SHARDS),


rule ingest:
    input:
        expand(rules.ingest_part.output.docs, part=EXTRA_PARTS),


rule convert:
    input:
        expand(rules.convert_part.output.docs, part=PARTS),


rule clean:
    input:
        expand(rules.clean_part.output.docs, part=PARTS),


rule minhash:
    input:
        expand(rules.minhash_part.output.signatures, part=PARTS),


rule dedup_bands:
    input:
        expand(rules.dedup_band_group.output.pairs, group=BAND_GROUPS),


rule dedup_exact:
    input:
        expand(rules.dedup_exact_group.output.copies, key_group=KEY_GROUPS),


rule dedup_join:
    input:
        expand(rules.dedup_join_part.output.report, join_part=JOIN_PARTS),


rule fetch_data:
    input:
        expand(rules.fetch_url.output.folder, fetched=RUN_FETCHES),


rule chat_data:
    input:
        expand(rules.chat_data_kind.output.data, kind=CHAT_KINDS),


rule bits_per_byte:
    input:
        expand(rules.bits_per_byte_model.output, model=MODELS),


rule multiple_choice:
    input:
        expand(rules.multiple_choice_model.output.json, model=MODELS, set=MC_SETS),


rule samples:
    input:
        expand(rules.samples_model.output.json, model=MODELS),


rule knowledge:
    input:
        expand(rules.knowledge_model.output.json, model=MODELS) if FACTS else [],
