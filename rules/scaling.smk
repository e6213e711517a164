# Scaling laws (docs/scaling.md): the sweep's points (rule sweep_point of rules/training.smk, each
# an ordinary pretraining job of its own) in one table, the laws fitted to their validation
# losses, and a budget turned into a preset.


rule sweep:
    input:
        summaries=expand(rules.sweep_point.output.summary, point=SWEEP_POINTS),
        tokens=rules.sweep_point.input.tokens,
    output:
        points="results/sweep/points.jsonl",
        table=report("results/sweep/points.md", caption="../report/sweep.rst", category=report_category(6, "Scaling")),
    params:
        points=SWEEP_POINTS,
        code=code_fingerprint("scaling.sweep_points"),
    log:
        "results/logs/sweep.log",
    benchmark:
        "results/benchmarks/sweep.tsv"
    conda:
        "../envs/training.yaml"
    shell:
        "python -m workflow_scripts.scaling.sweep_points --root results/sweep --points {params.points}"
        " --benchmarks results/benchmarks/sweep --tokens $(dirname {input.tokens}) --out {output.points}"
        " --markdown {output.table} --log {log}"


rule scaling:
    input:
        points=rules.sweep.output.points,
        extra_points=config["scaling"]["extra_points"],
    output:
        fit="results/scaling/fit.json",
        report=report("results/scaling/scaling.md", caption="../report/scaling.rst",
                      category=report_category(6, "Scaling")),
        plots=report(directory("results/scaling/plots"), patterns=["{name}.png"], caption="../report/scaling.rst",
                     category=report_category(6, "Scaling")),
    params:
        options=cli_options(config["scaling"], only=("near_optimal", "bootstrap", "held_out")),
        code=code_fingerprint("scaling.scaling_fit"),
    log:
        "results/logs/scaling.log",
    benchmark:
        "results/benchmarks/scaling.tsv"
    conda:
        "../envs/training.yaml"
    shell:
        "python -m workflow_scripts.scaling.scaling_fit --points {input.points} --extra-points {input.extra_points}"
        " {params.options}"
        " --out {output.fit} --markdown {output.report} --plots {output.plots} --log {log}"


rule budget_preset:
    input:
        fit=rules.scaling.output.fit,
    output:
        preset="results/scaling/budget.yaml",
    params:
        options=cli_options(config["scaling"], only=("budget_hours", "budget_device", "budget_mfu")),
        code=code_fingerprint("scaling.budget_preset"),
    log:
        "results/logs/budget_preset.log",
    benchmark:
        "results/benchmarks/budget_preset.tsv"
    conda:
        "../envs/training.yaml"
    shell:
        "python -m workflow_scripts.scaling.budget_preset --fit {input.fit} {params.options} --out {output.preset} --log {log}"
