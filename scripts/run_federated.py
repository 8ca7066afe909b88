"""Runs one federated configuration (dataset, alpha, algorithm, seed) of the A10 table.

Outputs:
    federated: results/federated/{dataset}/alpha{alpha}/{algorithm}/seed{seed}.h5
"""

import json

from landscape import logs
from landscape.federated.runner import run_federated

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    run_federated(
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        json.loads(snakemake.params.model),
        snakemake.output.federated,
        device=snakemake.params.device,
    )
