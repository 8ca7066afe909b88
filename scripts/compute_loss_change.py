"""Loss change under Gaussian perturbations against 0.5 lambda^2 sigma^2 tr(H) (V13).

Outputs:
    loss_change: results/{dataset}/{model}/{run}/hessian/epoch{epoch}/loss_change.h5
"""

import json

from landscape import logs
from landscape.curvature import compute_loss_change

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_loss_change(
        snakemake.input.checkpoint,
        snakemake.input.trace,
        snakemake.output.loss_change,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
