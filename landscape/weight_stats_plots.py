"""The figure of a run's weight statistics (:mod:`landscape.weight_stats`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.plots import save_figure


def plot_weight_stats(stats: str | Path, out: str | Path, title: str | None = None) -> None:
    """Per-layer weight norms against the epoch (left) and the histogram of all weights at every
    checkpoint (right, log counts)."""
    art = store.open(stats)
    epochs, names = art["epoch"], art.attrs["names"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for j, name in enumerate(names):
        left.plot(epochs, art["norms"][:, j], ".-", lw=1, label=name)
    left.set(xlabel="epoch", ylabel="||w||", title="per-layer weight norms", yscale="log")
    left.legend(fontsize=6, ncol=2)
    counts = art["counts"].sum(axis=1)
    colors = plt.cm.viridis(np.linspace(0, 1, len(epochs)))
    for e, row, color in zip(epochs, counts, colors, strict=True):
        right.stairs(row, art["bin_edges"], color=color, label=f"epoch {e}")
    right.set(xlabel="weight", ylabel="count", title="all weights", yscale="log")
    right.legend(fontsize=7)
    outside = int(art["underflow"].sum() + art["overflow"].sum())
    heading = title or Path(stats).stem
    if outside:
        heading += f"\n{outside} values outside the bins (not drawn)"
    fig.suptitle(heading, fontsize=10)
    save_figure(fig, out)
