"""Plots one 1D curve: loss and error against lambda, train and test.

Outputs:
    figure: results/figures/curves/{dataset}/{model}/{run}/epoch{epoch}/{curve}.png
"""

from landscape import logs
from landscape.plots import plot_curve

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_curve(
        snakemake.input.curve,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: {w.curve}",
    )
