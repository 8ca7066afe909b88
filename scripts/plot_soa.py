"""Plots a curve with the local quadratic (s.o.a.) at each of its points (V14).

Outputs:
    figure: results/figures/soa/{dataset}/{model}/{run}/epoch{epoch}/{soa}.png
"""

from landscape import logs
from landscape.plots import plot_soa

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    plot_soa(
        snakemake.input.soa,
        snakemake.output.figure,
        title=f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: s.o.a. of {w.soa}",
    )
