"""Exports the per-epoch train/test loss and accuracy of a run from its last checkpoint.

Outputs:
    history: results/{dataset}/{model}/{run}/history.h5
"""

from landscape import logs
from landscape.history import export_history

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    export_history(snakemake.input.checkpoint, snakemake.output.history)
