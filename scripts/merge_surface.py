"""Gathers the shards of a 2D surface into one file with x and y dimension scales.

Outputs:
    surface: results/{dataset}/{model}/{run}/surfaces/epoch{epoch}/{surface}.h5
"""

import json

from landscape import logs
from landscape.surface_merge import merge_surface

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    merge_surface(
        list(snakemake.input.shards), snakemake.output.surface, json.loads(snakemake.params.spec)
    )
