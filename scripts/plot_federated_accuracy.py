"""Draws test accuracy per round of every algorithm (mean, range over seeds), a panel per alpha.

Outputs:
    figure: results/figures/federated/accuracy_{dataset}.png
"""

from landscape import logs
from landscape.federated.table import plot_federated_accuracy

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    plot_federated_accuracy(
        snakemake.input.runs, snakemake.output.figure, title=snakemake.wildcards.dataset
    )
