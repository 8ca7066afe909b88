"""Draws a training trajectory over the loss contours of its PCA plane.

Outputs:
    figure: results/figures/trajectories/{dataset}/{model}/{run}/epoch{epoch}/{surface}.png
"""

from landscape import logs
from landscape.trajectory_plots import plot_trajectory

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_trajectory(
        snakemake.input.trajectory,
        snakemake.input.surface,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: {w.surface} (trajectory)",
    )
