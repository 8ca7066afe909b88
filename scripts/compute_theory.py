"""Computes the three A9 theory demos (ReLU pre-activations and agreement, softmax) of a checkpoint.

Outputs:
    theory: results/{dataset}/{model}/{run}/theory/epoch{epoch}.h5
"""

import json

from landscape import logs
from landscape.theory import compute_theory

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_theory(
        snakemake.input.checkpoint,
        snakemake.output.theory,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
