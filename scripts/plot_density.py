"""Plots one checkpoint's Hessian spectral density with its extreme eigenvalues and trace.

Outputs:
    figure: results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/density.png
"""

from landscape import logs
from landscape.plots import plot_density

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_density(
        snakemake.input.density,
        snakemake.output.figure,
        spectrum=snakemake.input.spectrum,
        trace=snakemake.input.trace,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: Hessian density",
    )
