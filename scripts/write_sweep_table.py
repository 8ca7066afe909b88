"""Gathers every sweep's side means, width and asymmetry into one table (A1-A6).

Outputs:
    csv: results/tables/sweeps.csv
"""

from landscape import logs
from landscape.sweep_table import write_sweep_table

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    write_sweep_table(snakemake.input.sweeps, snakemake.output.csv)
