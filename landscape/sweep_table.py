"""Reading sweep files (kind ``sweep``, :mod:`landscape.sweeps`): the varied keys in order, one
row per variant, and the table over sweeps (the A-families' table).

No torch here: the table and figure jobs import only this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape import store

if TYPE_CHECKING:  # pandas loads with the first table, not where vary_in_order is imported
    import pandas as pd


def vary_in_order(spec: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``vary`` with its keys in sweep order: ``order`` if the spec has it (canonical JSON sorts
    a mapping's keys, so the workflow passes the config's order as this list), else as given.

    Raises:
        ValueError: if ``order`` does not list exactly the keys of ``vary``.
    """
    vary = spec["vary"]
    order = spec.get("order", list(vary))
    if sorted(order) != sorted(vary):
        raise ValueError(f"order: {order} does not list the keys of vary ({sorted(vary)})")
    return {key: vary[key] for key in order}


def read_sweep(path: str | Path) -> pd.DataFrame:
    """One row per variant of a sweep file.

    Columns: ``variant`` (the label), the varied keys, ``relative_norm``, ``sign_share``, then
    per split and metric ``{split}/{metric}/mean_pos``, ``.../mean_neg`` and ``.../type``, then
    ``run`` and ``epoch``.
    """
    import pandas as pd

    art = store.open(path)
    frame = pd.DataFrame({"variant": list(art["variant"])})
    for key in vary_in_order(art.spec):
        frame[key] = list(art[f"vary/{key}"])
    for field in ("relative_norm", "sign_share"):
        frame[field] = art[f"direction/{field}"]
    metrics = [n for n in art.data if n.count("/") == 1 and n.split("/")[1] in ("loss", "error")]
    for metric in sorted(metrics, key=_metric_order):
        for field in ("mean_pos", "mean_neg", "type"):
            frame[f"{metric}/{field}"] = list(art[f"analysis/{metric}/{field}"])
    frame["run"], frame["epoch"] = art.attrs["run"], art.attrs["epoch"]
    return frame


def sweep_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """:func:`read_sweep` of every sweep file, keyed by the file (the A-families' table).

    Adds per metric ``{split}/{metric}/width`` (the mean of the two sides' means: how far the
    valley rises over lambda in [min, max], lower is wider) and ``.../asymmetry`` (the -lambda
    side's mean minus the +lambda side's: positive where the +lambda side is flatter).
    """
    import pandas as pd

    frames = []
    for path in paths:
        frame = read_sweep(path)
        frame.insert(0, "sweep", Path(path).stem)
        for column in [c for c in frame.columns if c.endswith("/mean_pos")]:
            metric = column[: -len("/mean_pos")]
            pos, neg = frame[column], frame[f"{metric}/mean_neg"]
            frame[f"{metric}/width"] = (pos + neg) / 2
            frame[f"{metric}/asymmetry"] = neg - pos
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_sweep_table(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Writes :func:`sweep_table` as CSV, atomically."""
    return store.write_csv(sweep_table(paths), out)


def _metric_order(metric: str) -> tuple[int, int]:
    split, _, name = metric.partition("/")
    return ({"train": 0, "test": 1}.get(split, 2), {"loss": 0, "error": 1}.get(name, 2))
