"""Evaluates loss and error along a 1D line theta + lambda * eps on the configured splits.

Outputs:
    curve: results/{dataset}/{model}/{run}/curves/epoch{epoch}/{curve}.h5
"""

import json

from landscape import logs
from landscape.evaluate import compute_curve

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_curve(
        snakemake.input.checkpoint,
        snakemake.input.direction,
        snakemake.output.curve,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
