"""Trains one run up to one checkpoint epoch, continuing from the run's previous checkpoint.

Epoch 0 of a fine-tuning run (``train.init``) starts from the other run's checkpoint ``init``.

Outputs:
    checkpoint: results/{dataset}/{model}/{run}/checkpoints/epoch{epoch}.pt
"""

import json

from landscape import logs
from landscape.train import train_model

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    train_model(
        snakemake.output.checkpoint,
        json.loads(snakemake.params.spec),
        int(snakemake.wildcards.epoch),
        previous=snakemake.input.get("previous"),
        device=snakemake.params.device,
        init=snakemake.input.get("init"),
    )
