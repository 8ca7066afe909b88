"""Draws a run's per-layer weight norms and weight histograms across its checkpoints.

Outputs:
    figure: results/figures/weight_stats/{dataset}/{model}/{run}.png
"""

from landscape import logs
from landscape.weight_stats_plots import plot_weight_stats

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_weight_stats(
        snakemake.input.stats,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}: weights across checkpoints",
    )
