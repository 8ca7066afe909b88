"""Lists every artifact under results/ with its provenance attributes.

Outputs:
    csv: results/catalog.csv
"""

from pathlib import Path

from landscape import logs
from landscape.store import write_catalog

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    write_catalog(Path(snakemake.output.csv).parent, snakemake.output.csv)
