"""Evaluates one shard of a Hessian eigenvalue map over a 2D plane.

Outputs:
    shard: results/{dataset}/{model}/{run}/eigenmaps/epoch{epoch}/{eigenmap}.shards/{i}-of-{n}.h5
"""

import json

from landscape import logs
from landscape.eigenmaps import compute_eigenmap_shard

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_eigenmap_shard(
        snakemake.input.checkpoint,
        list(snakemake.input.directions),
        snakemake.output.shard,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        snakemake.wildcards.scatteritem,
        device=snakemake.params.device,
    )
