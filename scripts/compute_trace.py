"""Trace of one checkpoint's Hessian (exact for piecewise-linear nets, else XTrace).

Outputs:
    trace: results/{dataset}/{model}/{run}/hessian/epoch{epoch}/trace.h5
"""

import json

from landscape import logs
from landscape.curvature import compute_trace

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    compute_trace(
        snakemake.input.checkpoint,
        snakemake.output.trace,
        json.loads(snakemake.params.spec),
        json.loads(snakemake.params.dataset),
        device=snakemake.params.device,
    )
