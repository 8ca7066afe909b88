"""The curve taxonomy table (VT): type, stationary points and asymmetry of every curve.

Outputs:
    csv: results/tables/curve_taxonomy.csv
"""

from landscape import logs
from landscape.curve_table import write_curve_table

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    write_curve_table(snakemake.input.curves, snakemake.output.csv)
