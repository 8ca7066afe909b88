"""The figure of a mode-connecting curve (:func:`landscape.mode_connect.compute_mode_connect`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.plots import save_figure


def plot_mode_connect(path: str | Path, out: str | Path, title: str | None = None) -> None:
    """Loss and error against ``t``, curve and straight line, one line style per path and
    one colour per split; the legend gives each path's barrier."""
    art = store.open(path)
    runs = art.spec["runs"]
    ts = art["t"]
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.8), squeeze=False)
    styles = {"curve": "-", "line": "--"}
    labels = {"curve": art.attrs["curve"], "line": "straight line"}
    for ax, metric in zip(axes.flat, ("loss", "error"), strict=True):
        for split, colour in (("train", "tab:blue"), ("test", "tab:orange")):
            for kind in ("curve", "line"):
                key = f"{kind}/{split}/{metric}"
                if key not in art.data:
                    continue
                height = float(art[f"{kind}/{split}/{metric}_barrier"])
                ax.plot(
                    ts,
                    art[key],
                    styles[kind],
                    color=colour,
                    marker="o",
                    ms=2.5,
                    label=f"{split}, {labels[kind]} (barrier {height:.3g})",
                )
        ax.set_xlabel(f"t: {runs[0]} (0) to {runs[1]} (1)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} along the path")
        below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncol": 2}
        ax.legend(fontsize=7, frameon=False, **below)
    fig.suptitle(title or Path(path).stem)
    fig.tight_layout()
    save_figure(fig, out)
