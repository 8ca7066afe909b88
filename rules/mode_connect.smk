# Mode-connecting curves between two runs (landscape/mode_connect.py), one file per `mode_connect` block.
#   results/mode_connect/{name}.h5              compute_mode_connect
#   results/figures/mode_connect/{name}.png     plot_mode_connect


rule compute_mode_connect:
    input:
        unpack(get_mode_connect_checkpoints),
    output:
        curve=MODE_CONNECT,
    log:
        "logs/compute_mode_connect/{name}.log",
    benchmark:
        "logs/benchmark/compute_mode_connect/{name}.tsv"
    wildcard_constraints:
        name="|".join(config["mode_connect"]) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    params:
        spec=lambda w: canonical(mode_connect_spec(config, w.name)),
        dataset=lambda w: canonical(
            config["datasets"][mode_connect_spec(config, w.name)["dataset"]]
        ),
        device=config["device"],
    script:
        "../scripts/compute_mode_connect.py"


rule plot_mode_connect:
    input:
        curve=rules.compute_mode_connect.output.curve,
    output:
        figure=report(
            MODE_CONNECT_FIGURE,
            caption="../report/mode_connect.rst",
            category="V7",
            subcategory="mode connectivity",
            labels={"curve": "{name}"},
        ),
    log:
        "logs/plot_mode_connect/{name}.log",
    wildcard_constraints:
        name="|".join(config["mode_connect"]) or "(?!)",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_mode_connect.py"
