"""Draws the A10 table as the paper lays it out: algorithms as rows, dataset x alpha as columns.

Outputs:
    figure: results/figures/federated/table.png
"""

from landscape import logs
from landscape.federated.table import plot_federated_table

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    plot_federated_table(snakemake.input.csv, snakemake.output.figure)
