"""Evaluates one shard of a 2D surface theta + x * eps_x + y * eps_y.

Outputs:
    shard: results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.shards/{i}-of-{n}.h5
"""

import json

from landscape import logs
from landscape.evaluate import compute_surface_shard

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_surface_shard(
        snakemake.input.checkpoint,
        list(snakemake.input.directions),
        snakemake.output.shard,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        snakemake.wildcards.scatteritem,
        device=snakemake.params.device,
    )
