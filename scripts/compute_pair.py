"""Statistics of one `pairs` block: groups, signs, interpolation, SSR over epochs, soups (A7, A8).

Outputs:
    pair: results/pairs/{pair}.h5
"""

import json

from landscape import logs
from landscape.pairs import compute_pair

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_pair(
        json.loads(snakemake.params.spec),
        dict(snakemake.input.items()),
        snakemake.output.pair,
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
