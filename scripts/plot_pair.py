"""Figure of one `pairs` block: group statistics, interpolation, SSR over epochs, soups.

Outputs:
    figure: results/figures/pairs/{pair}.png
"""

from landscape import logs
from landscape.pair_plots import plot_pair

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    plot_pair(snakemake.input.pair, snakemake.output.figure, title=snakemake.wildcards.pair)
