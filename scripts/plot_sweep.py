"""Plots one sweep as its block's ``plot`` says (a grid of curves, or side means vs sign share).

Outputs:
    figure: results/figures/sweeps/{dataset}/{model}/{run}/epoch{epoch}/{sweep}.png
"""

import json

from landscape import logs
from landscape.sweep_plots import plot_sweep

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_sweep(
        snakemake.input.sweep,
        snakemake.output.figure,
        json.loads(snakemake.params.plot),
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: {w.sweep}",
    )
