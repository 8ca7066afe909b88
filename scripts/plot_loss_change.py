"""Plots the loss change under Gaussian perturbations against 0.5 lambda^2 sigma^2 tr(H) (V13).

Outputs:
    figure: results/figures/hessian/{dataset}/{model}/{run}/epoch{epoch}/loss_change.png
"""

from landscape import logs
from landscape.plots import plot_loss_change

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_loss_change(
        snakemake.input.loss_change,
        snakemake.output.figure,
        trace=snakemake.input.trace,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: loss change under noise",
    )
