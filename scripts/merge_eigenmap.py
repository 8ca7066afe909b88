"""Gathers the shards of a Hessian eigenvalue map into one file with x and y dimension scales.

Outputs:
    eigenmap: results/{dataset}/{model}/{run}/eigenmaps/epoch{epoch}/{eigenmap}.h5
"""

import json

from landscape import logs
from landscape.eigenmap_merge import merge_eigenmap

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    merge_eigenmap(
        list(snakemake.input.shards), snakemake.output.eigenmap, json.loads(snakemake.params.spec)
    )
