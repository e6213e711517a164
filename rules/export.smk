# The trained models as GGUF files for llama.cpp, Ollama and LM Studio, and an Ollama Modelfile
# for the chat model (config export; README "Run it in llama.cpp or Ollama").


rule gguf_file:
    input:
        model="results/{model}",
    output:
        gguf="results/export/{model}-{gguf_type}.gguf",
        stats="results/export/{model}-{gguf_type}.json",
    params:
        code=code_fingerprint("export.export_gguf"),
    log:
        "results/logs/export_gguf/{model}-{gguf_type}.log",
    benchmark:
        "results/benchmarks/export_gguf/{model}-{gguf_type}.tsv"
    conda:
        "../envs/training.yaml"
    shell:
        "python -m workflow_scripts.export.export_gguf --model {input.model} --type {wildcards.gguf_type}"
        " --out {output.gguf} --stats {output.stats} --log {log}"


rule ollama_modelfile:
    input:
        model=f"results/{EXPORT_CHAT_MODEL}",
        gguf=rules.gguf_file.output.gguf.format(model=EXPORT_CHAT_MODEL, gguf_type=EXPORT_CHAT_TYPE),
    output:
        "results/export/Modelfile",
    params:
        code=code_fingerprint("export.ollama_modelfile"),
    log:
        "results/logs/ollama_modelfile.log",
    benchmark:
        "results/benchmarks/ollama_modelfile.tsv"
    conda:
        "../envs/training.yaml"
    shell:
        "python -m workflow_scripts.export.ollama_modelfile --model {input.model} --gguf {input.gguf} --out {output}"
        " --log {log}"


rule gguf:
    input:
        expand(rules.gguf_file.output.gguf, model=EXPORT_MODELS, gguf_type=config["export"]["types"]),
        rules.ollama_modelfile.output,
