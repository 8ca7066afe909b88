CHECKPOINT = RUN_DIR + "/checkpoints/epoch{epoch}.pt"


def get_previous_checkpoint(wildcards):
    """The checkpoint that training to {epoch} continues from (none for epoch 0)."""
    epochs = checkpoint_epochs(config["runs"][wildcards.run]["train"])
    epoch = int(wildcards.epoch)
    if epoch not in epochs:
        raise ValueError(
            f"runs.{wildcards.run}.train.checkpoints: no checkpoint at epoch {epoch} (have {epochs})"
        )
    earlier = [e for e in epochs if e < epoch]
    if not earlier:
        return {}
    return {
        "previous": CHECKPOINT.format(
            **{**dict(wildcards.items()), "epoch": max(earlier)}
        )
    }


rule train_model:
    input:
        unpack(get_previous_checkpoint),
    output:
        checkpoint=CHECKPOINT,
    log:
        "logs/train_model/{dataset}/{model}/{run}/epoch{epoch}.log",
    benchmark:
        "logs/benchmark/train_model/{dataset}/{model}/{run}/epoch{epoch}.tsv"
    conda:
        "../envs/landscape.yaml"
    # One thread per job: the small default models train fastest with jobs in parallel.
    # Profiles raise this with set-threads for paper-scale runs.
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=lambda w: canonical(run_spec(config, w.run)),
        device=config["device"],
    script:
        "../scripts/train_model.py"


rule export_history:
    input:
        checkpoint=lambda w: CHECKPOINT.format(
            **w, epoch=config["runs"][w.run]["train"]["epochs"]
        ),
    output:
        history=RUN_DIR + "/history.h5",
    log:
        "logs/export_history/{dataset}/{model}/{run}.log",
    conda:
        "../envs/landscape.yaml"
    resources:
        mem_mb=1000,
    script:
        "../scripts/export_history.py"
