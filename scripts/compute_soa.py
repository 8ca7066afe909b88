"""Second-order approximation of a curve at each of its points (V14).

Outputs:
    soa: results/{dataset}/{model}/{run}/soa/epoch{epoch}/{soa}.h5
"""

import json

from landscape import logs
from landscape.curvature import compute_soa

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_soa(
        snakemake.input.checkpoint,
        snakemake.input.direction,
        snakemake.output.soa,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
