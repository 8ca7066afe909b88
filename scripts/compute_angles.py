"""Angles between Gaussian directions and descent directions (V5).

Outputs:
    angles: results/{dataset}/{model}/{run}/angles/epoch{epoch}.h5
"""

import json

from landscape import logs
from landscape.curvature import compute_angles

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_angles(
        snakemake.input.checkpoint,
        snakemake.input.target,
        snakemake.output.angles,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
