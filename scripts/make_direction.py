"""Derives one direction from a checkpoint and stores it, one dataset per parameter.

Outputs:
    direction: results/{dataset}/{model}/{run}/directions/epoch{epoch}/{direction}.h5
"""

import json

from landscape import logs
from landscape.directions import write_direction

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    write_direction(
        snakemake.input.checkpoint,
        snakemake.output.direction,
        json.loads(snakemake.params.spec),
        device=snakemake.params.device,
        references={
            k: v
            for k, v in snakemake.input.items()
            if k not in ("checkpoint", "spectrum", "closest_to")
        },
        dataset=json.loads(snakemake.params.dataset),
        spectrum=snakemake.input.get("spectrum"),
        reference_direction=snakemake.input.get("closest_to"),
    )
