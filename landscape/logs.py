"""Logging for workflow scripts: everything, uncaught exceptions too, goes to the rule's log."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def configure(log_file: str | Path | None, threads: int | None = None) -> None:
    """Sends logging to ``log_file`` and stderr, logs uncaught exceptions, pins torch threads.

    Args:
        log_file: the rule's log path (None logs to stderr only).
        threads: CPU threads granted by Snakemake; fixing them keeps CPU results reproducible.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )

    def log_uncaught(kind, value, tb):
        logging.getLogger("landscape").error("uncaught exception", exc_info=(kind, value, tb))

    sys.excepthook = log_uncaught
    if threads:
        import torch  # only jobs that compute pin threads; plot jobs need no torch

        torch.set_num_threads(threads)
    locking = os.environ.get("HDF5_USE_FILE_LOCKING")  # set by the config's hdf5_file_locking
    logging.getLogger("landscape").info(
        "HDF5 file locking: %s",
        f"HDF5_USE_FILE_LOCKING={locking}" if locking else "HDF5 default (on)",
    )
