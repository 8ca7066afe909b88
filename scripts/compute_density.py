"""Spectral density of one checkpoint's Hessian by stochastic Lanczos quadrature.

Outputs:
    density: results/{dataset}/{model}/{run}/hessian/epoch{epoch}/density.h5
"""

import json

from landscape import logs
from landscape.curvature import compute_density

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_density(
        snakemake.input.checkpoint,
        snakemake.output.density,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
