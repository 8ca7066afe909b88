"""Draws the curve taxonomy table (VT) as a figure: the type of every curve and metric.

Outputs:
    figure: results/figures/tables/curve_taxonomy.png
"""

from landscape import logs
from landscape.plots import plot_curve_table

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    plot_curve_table(snakemake.input.csv, snakemake.output.figure)
