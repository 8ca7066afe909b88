"""Projects a run's checkpoints onto the plane of a surface on two PCA directions.

Outputs:
    trajectory: results/{dataset}/{model}/{run}/trajectories/epoch{epoch}/{surface}.h5
"""

import json

from landscape import logs
from landscape.trajectory import compute_trajectory

if __name__ == "__main__":
    logs.configure(snakemake.log[0], snakemake.threads)
    epochs = json.loads(snakemake.params.epochs)
    compute_trajectory(
        snakemake.input.checkpoint,
        list(snakemake.input.directions),
        dict(zip(epochs, snakemake.input.trajectory, strict=True)),
        snakemake.output.trajectory,
        json.loads(snakemake.params.spec),
    )
