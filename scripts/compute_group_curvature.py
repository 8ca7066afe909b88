"""Top eigenvalues and trace of the Hessian restricted to each parameter group, at a checkpoint.

Outputs:
    curvature: results/{dataset}/{model}/{run}/hessian/epoch{epoch}/group_curvature.h5
"""

import json

from landscape import logs
from landscape.group_curvature import compute_group_curvature

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_group_curvature(
        snakemake.input.checkpoint,
        snakemake.output.curvature,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
