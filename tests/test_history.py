"""The history artifact: read from a checkpoint's metadata, without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

from landscape import store

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path) -> list[dict]:
    history = [
        {
            "epoch": e,
            "lr": 0.1 / (e + 1),
            "train_loss": 2.0 - 0.3 * e,
            "train_acc": 0.1 * e,
            "test_loss": 2.1 - 0.25 * e,
            "test_acc": 0.09 * e,
        }
        for e in range(4)
    ]
    meta = {"kind": "checkpoint", "run": "r", "epoch": 3, "spec": {"run": "r"}, "history": history}
    store.write_checkpoint({"model": {"w": torch.ones(3)}, "meta": meta}, path)
    return history


def test_history_holds_every_epoch_of_the_checkpoint(tmp_path):
    from landscape.history import export_history

    history = _checkpoint(tmp_path / "epoch3.pt")
    export_history(tmp_path / "epoch3.pt", tmp_path / "history.h5")
    with h5py.File(tmp_path / "history.h5") as f:
        np.testing.assert_array_equal(f["epoch"][()], [0, 1, 2, 3])
        np.testing.assert_array_equal(f["train/loss"][()], [r["train_loss"] for r in history])
        np.testing.assert_array_equal(f["test/acc"][()], [r["test_acc"] for r in history])
        np.testing.assert_array_equal(f["lr"][()], [r["lr"] for r in history])


def test_history_export_does_not_import_torch(tmp_path):
    _checkpoint(tmp_path / "epoch3.pt")
    code = (
        "import sys\n"
        "from landscape.history import export_history\n"
        f"export_history({str(tmp_path / 'epoch3.pt')!r}, {str(tmp_path / 'h.h5')!r})\n"
        "assert 'torch' not in sys.modules, 'the history export imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert (tmp_path / "h.h5").exists()
