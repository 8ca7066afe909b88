"""A run's training history (loss, accuracy, learning rate per epoch) as an HDF5 artifact.

Read from the last checkpoint's metadata without torch, so the job costs no torch import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landscape import store


def export_history(checkpoint: str | Path, out: str | Path) -> None:
    """Writes a run's train/test loss and accuracy per epoch (from its last checkpoint) as HDF5."""
    meta = store.checkpoint_meta(checkpoint)
    rows = meta["history"]
    with store.create(
        out, kind="history", spec=meta["spec"], inputs={"checkpoint": checkpoint}
    ) as w:
        w.scale("epoch", np.array([r["epoch"] for r in rows], dtype=np.int64))
        for split in ("train", "test"):
            for metric in ("loss", "acc"):
                values = np.array([r[f"{split}_{metric}"] for r in rows], dtype=np.float64)
                w.put(f"{split}/{metric}", values, dims=("epoch",))
        w.put("lr", np.array([r["lr"] for r in rows], dtype=np.float64), dims=("epoch",))
