# Directions that read data and train (gradient, mined: Algorithms 1 and 2) are a rule of their
# own, so that a cluster profile can give them a GPU without giving one to every noise direction.
TRAINED_KINDS = ("gradient", "mined")


rule make_direction:
    input:
        unpack(get_direction_references),
        unpack(get_direction_spectrum),
        unpack(get_direction_closest),
        checkpoint=rules.train_model.output.checkpoint,
    output:
        direction=DIRECTION,
    log:
        "logs/make_direction/{dataset}/{model}/{run}/epoch{epoch}/{direction}.log",
    wildcard_constraints:
        direction=directions_of_kinds(*TRAINED_KINDS, exclude=True),
    conda:
        "../envs/landscape.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        spec=lambda w: canonical(direction_spec(config, w.direction)),
        dataset=lambda w: canonical(get_direction_dataset(w)),
        device=config["device"],
    script:
        "../scripts/make_direction.py"


use rule make_direction as mine_direction with:
    log:
        "logs/mine_direction/{dataset}/{model}/{run}/epoch{epoch}/{direction}.log",
    wildcard_constraints:
        direction=directions_of_kinds(*TRAINED_KINDS),
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
