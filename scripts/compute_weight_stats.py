"""Per-layer weight norms and weight histograms (fixed bins) across a run's checkpoints.

Outputs:
    stats: results/{dataset}/{model}/{run}/weight_stats.h5
"""

import json

from landscape import logs
from landscape.weight_stats import compute_weight_stats

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    epochs = json.loads(snakemake.params.epochs)
    compute_weight_stats(
        dict(zip(epochs, snakemake.input.checkpoints, strict=True)),
        snakemake.output.stats,
        json.loads(snakemake.params.spec),
    )
