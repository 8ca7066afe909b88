"""The curve taxonomy (VT): the stored analysis of every curve file as one table.

No torch here: the table job imports only this (the analysis is written by
:func:`landscape.evaluate.write_analysis`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from landscape import store

if TYPE_CHECKING:  # pandas loads with the first table, not where ANALYSIS_FIELDS is imported
    import pandas as pd

ANALYSIS_FIELDS = ("n_stationary", "mean_pos", "mean_neg", "ratio", "difference")


def read_analysis(path: str | Path) -> pd.DataFrame:
    """The curve analysis of one curve file: one row per metric (``test/loss``, ...).

    Columns: ``metric``, ``type``, ``n_stationary``, ``stationary`` (the lambdas), ``mean_pos``,
    ``mean_neg``, ``ratio``, ``difference``, then the curve's ``run`` and ``epoch``.
    """
    import pandas as pd

    art = store.open(path)
    lambdas = art["lambda"]
    rows = []
    for key in art.data:
        if not (key.startswith("analysis/") and key.endswith("/type")):
            continue
        metric = key[len("analysis/") : -len("/type")]
        field = {f: art[f"analysis/{metric}/{f}"] for f in ANALYSIS_FIELDS}
        rows.append(
            {
                "metric": metric,
                "type": art[key],
                "n_stationary": int(field["n_stationary"]),
                "stationary": np.round(lambdas[art[f"analysis/{metric}/stationary"]], 12).tolist(),
                **{f: float(field[f]) for f in ANALYSIS_FIELDS if f != "n_stationary"},
                "run": art.attrs["run"],
                "epoch": art.attrs["epoch"],
            }
        )
    return pd.DataFrame(rows)


def curve_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The curve taxonomy (VT): :func:`read_analysis` of every curve, keyed by its path.

    Paths end in ``{dataset}/{model}/{run}/curves/epoch{E}/{curve}.h5`` (the store's layout).
    """
    import pandas as pd

    frames = []
    for path in paths:
        frame = read_analysis(path)
        dataset, model = Path(path).parts[-6:-4]
        frame.insert(0, "curve", Path(path).stem)
        frame.insert(0, "model", model)
        frame.insert(0, "dataset", dataset)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_curve_table(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Writes :func:`curve_table` as CSV (atomically) and returns it."""
    return store.write_csv(curve_table(paths), out)
