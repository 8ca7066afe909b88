"""Draws a Hessian eigenvalue map: largest, most negative eigenvalue and |min / max|.

Outputs:
    figure: results/figures/eigenmaps/{dataset}/{model}/{run}/epoch{epoch}/{eigenmap}.png
"""

from landscape import logs
from landscape.eigenmap_plots import plot_eigenmap

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_eigenmap(
        snakemake.input.eigenmap,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: {w.eigenmap}",
    )
