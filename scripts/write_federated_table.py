"""Gathers the final test accuracy of every federated run into the A10 table (mean +- std).

Outputs:
    csv: results/tables/federated.csv
"""

from landscape import logs
from landscape.federated.table import write_federated_table

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    write_federated_table(snakemake.input.runs, snakemake.output.csv)
