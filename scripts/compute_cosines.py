"""Absolute cosines between directions and Hessian eigenvectors at one checkpoint (V9).

Outputs:
    cosines: results/{dataset}/{model}/{run}/hessian/epoch{epoch}/cosines.h5
"""

import json

from landscape import logs
from landscape.curvature import compute_cosines

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    spec = json.loads(snakemake.params.spec)
    compute_cosines(
        snakemake.input.spectrum,
        dict(zip(spec["directions"], snakemake.input.directions, strict=True)),
        snakemake.output.cosines,
        spec,
    )
