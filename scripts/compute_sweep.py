"""Evaluates the 1D curves of one checkpoint along every variant of a sweep.

Outputs:
    sweep: results/{dataset}/{model}/{run}/sweeps/epoch{epoch}/{sweep}.h5
"""

import json

from landscape import logs
from landscape.sweeps import compute_sweep

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_sweep(
        snakemake.input.checkpoint,
        snakemake.output.sweep,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
        references={r: snakemake.input[r] for r in ("theta_0",) if r in snakemake.input.keys()},
    )
