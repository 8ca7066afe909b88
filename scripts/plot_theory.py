"""Plots the A9 theory demos of one checkpoint: (a) histograms, (b) agreement, (c) softmax metrics.

Outputs:
    figure: results/figures/theory/{dataset}/{model}/{run}/epoch{epoch}.png
"""

from landscape import logs
from landscape.theory_plots import plot_theory

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_theory(
        snakemake.input.theory,
        snakemake.output.figure,
        title=f"A9 theory demos: {w.dataset} / {w.model} / {w.run}, epoch {w.epoch}",
    )
