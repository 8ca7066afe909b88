"""Figure of one `mode_connect` block: loss and error along the curve and the straight line.

Outputs:
    figure: results/figures/mode_connect/{name}.png
"""

from landscape import logs
from landscape.mode_connect_plots import plot_mode_connect

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    plot_mode_connect(
        snakemake.input.curve, snakemake.output.figure, title=snakemake.wildcards.name
    )
