"""The table of group-curvature files (:mod:`landscape.group_curvature`): one row per group.

No torch here: the table job imports only this.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from landscape import store

COLUMNS = ("group", "num_params", "trace", "trace_stderr", "trace_estimator")


def read_group_curvature(path: str | Path) -> pd.DataFrame:
    """One row per group of a group-curvature file: ``run``, ``epoch``, the columns of
    :data:`COLUMNS` and ``eigenvalue_1`` ... ``eigenvalue_k``."""
    art = store.open(path)
    rows = []
    for i, group in enumerate(art.attrs["groups"]):
        row = {"run": art.attrs["run"], "epoch": art.attrs["epoch"], "group": group}
        row |= {
            "num_params": int(art["num_params"][i]),
            "trace": float(art["trace"][i]),
            "trace_stderr": float(art["trace_stderr"][i]),
            "trace_estimator": art.attrs["trace_estimators"][i],
        }
        row |= {f"eigenvalue_{j + 1}": float(v) for j, v in enumerate(art["eigenvalues"][i])}
        rows.append(row)
    return pd.DataFrame(rows)


def write_group_curvature_table(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Writes :func:`read_group_curvature` of every file as one CSV (atomically); returns it.

    Paths end in ``{dataset}/{model}/{run}/hessian/epoch{E}/group_curvature.h5``; ``dataset``
    and ``model`` come from them.
    """
    frames = []
    for path in paths:
        frame = read_group_curvature(path)
        dataset, model = Path(path).parts[-6:-4]
        frame.insert(0, "model", model)
        frame.insert(0, "dataset", dataset)
        frames.append(frame)
    return store.write_csv(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), out)
