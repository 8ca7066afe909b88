"""Top (LA) and most negative (SA) Hessian eigenpairs of one checkpoint, with residuals.

Outputs:
    spectrum: results/{dataset}/{model}/{run}/hessian/epoch{epoch}/spectrum.h5
"""

import json

from landscape import logs
from landscape.curvature import compute_spectrum

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_spectrum(
        snakemake.input.checkpoint,
        snakemake.output.spectrum,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
