"""The papers' claims checked on this run's curves, surfaces, s.o.a., sweeps and pairs.

Outputs:
    csv: results/tables/claims.csv
"""

from landscape import logs
from landscape.claims import write_claims

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    write_claims(
        snakemake.output.csv,
        curves=snakemake.input.curves,
        surfaces=snakemake.input.surfaces,
        soas=snakemake.input.soa,
        sweeps=snakemake.input.sweeps,
        pairs=snakemake.input.pairs,
    )
