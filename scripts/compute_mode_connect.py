"""Trains the curve of one `mode_connect` block and evaluates it next to the straight line.

Outputs:
    curve: results/mode_connect/{name}.h5
"""

import json

from landscape import logs
from landscape.mode_connect import compute_mode_connect

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_mode_connect(
        json.loads(snakemake.params.spec),
        dict(snakemake.input.items()),
        snakemake.output.curve,
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
