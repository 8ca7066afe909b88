"""The per-group curvature of every selected checkpoint as one table.

Outputs:
    csv: results/tables/group_curvature.csv
"""

from landscape import logs
from landscape.group_curvature_table import write_group_curvature_table

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    write_group_curvature_table(list(snakemake.input.curvature), snakemake.output.csv)
