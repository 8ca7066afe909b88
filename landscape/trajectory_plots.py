"""A training trajectory (:mod:`landscape.trajectory`) drawn over its surface's loss contours."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.plots import save_figure


def plot_trajectory(
    trajectory: str | Path, surface: str | Path, out: str | Path, title: str | None = None
) -> None:
    """The trajectory drawn over the contours of the surface's loss, one panel per split.

    Points off the surface's grid are drawn all the same (the axes grow to show them); NaN and
    inf loss values are masked, and the title says how many.
    """
    traj, art = store.open(trajectory), store.open(surface)
    x, y = art["x"], art["y"]
    tx, ty, epochs = traj["coordinates/x"], traj["coordinates/y"], traj["epoch"]
    splits = [s for s in ("train", "test") if f"{s}/loss" in art.data]
    fig, axes = plt.subplots(
        1, len(splits), figsize=(4.6 * len(splits), 4.0), constrained_layout=True, squeeze=False
    )
    masked = 0
    for ax, split in zip(axes[0], splits, strict=True):
        loss = art[f"{split}/loss"]
        bad = ~np.isfinite(loss)
        masked = max(masked, int(bad.sum()))
        values = np.ma.masked_array(np.log10(np.clip(loss, 1e-12, None)), mask=bad)
        if values.count() > 1:
            lines = ax.contour(x, y, values.T, levels=15, cmap="viridis")
            ax.clabel(lines, fontsize=6, fmt="%.2f")
        ax.plot(tx, ty, "r.-", lw=1, ms=6)
        for e, px, py in zip(epochs, tx, ty, strict=True):
            ax.annotate(f"{e}", (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="x (PC 1)", ylabel="y (PC 2)", title=f"{split}: log10 loss contours")
    ratio = traj.attrs.get("explained_variance_ratio")
    heading = title or Path(trajectory).stem
    if ratio is not None:
        heading += f"\nexplained variance ratio: PC1 {ratio[0]:.3f}, PC2 {ratio[1]:.3f}"
    if masked:
        heading += f"\n{masked} non-finite loss values masked"
    fig.suptitle(heading, fontsize=9)
    save_figure(fig, out)
