"""The figure of an eigenvalue map (:mod:`landscape.eigenmaps`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.plots import save_figure


def plot_eigenmap(eigenmap: str | Path, out: str | Path, title: str | None = None) -> None:
    """Three heatmaps: largest and most negative eigenvalue and ``|min / max|``.

    Non-finite values (points not computed) are masked and counted in the title.
    """
    art = store.open(eigenmap)
    x, y = art["x"], art["y"]
    panels = (
        ("max_eigenvalue", "largest eigenvalue", "viridis"),
        ("min_eigenvalue", "most negative eigenvalue", "viridis"),
        ("ratio", "|min / max|", "cividis"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    masked = 0
    for ax, (name, label, cmap) in zip(axes, panels, strict=True):
        values = art[name]
        bad = ~np.isfinite(values)
        masked = max(masked, int(bad.sum()))
        mesh = ax.pcolormesh(x, y, np.ma.masked_array(values, bad).T, cmap=cmap, shading="nearest")
        ax.plot(0, 0, "w+", ms=10)
        ax.set(xlabel="x", ylabel="y", title=label)
        fig.colorbar(mesh, ax=ax)
    heading = title or Path(eigenmap).stem
    if masked:
        heading += f"\n{masked} non-finite values masked"
    fig.suptitle(heading, fontsize=10)
    save_figure(fig, out)
