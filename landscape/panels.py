"""Draws a multi-panel paper figure (see :mod:`landscape.figures` for what each panel holds).

A curve panel draws one line per curve, the number of stationary points of the drawn metric in
the legend (Li et al.'s count, :func:`landscape.curves.count_stationary`), the dotted log(C) line
of a random guess under the loss (where it does not flatten the curves, see
:func:`landscape.plots.chance_line`), a black dotted line at theta (lambda 0) and red dotted lines
at the figure's ``marks``. A surface panel draws filled contours of log10 loss with theta marked.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape import store
from landscape.curves import count_stationary
from landscape.figures import figure_members
from landscape.plots import bn_label, chance_line, loss_spans_decades, plt, save_figure

MAX_COLUMNS = 4
TITLE_CHARS_PER_INCH = 13  # at fontsize 10


def _grid(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 3.1 * rows + 0.5), constrained_layout=True, squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _curve_panel(
    ax: plt.Axes,
    lines: Sequence[Mapping[str, Any]],
    arts: Sequence[store.Artifact],
    split: str,
    metric: str,
    marks: Sequence[float],
) -> str:
    """Draws the lines of one panel; returns the BN treatment shared by its curves."""
    values = []
    for line, art in zip(lines, arts, strict=True):
        y = art[f"{split}/{metric}"]
        values.append(y)
        ax.plot(
            art["lambda"] * line["x_scale"],
            y,
            marker=".",
            ms=3,
            lw=1.2,
            label=f"{line['label']} ({count_stationary(y)})",
        )
    if metric == "loss":
        chance_line(ax, arts[0].attrs.get("num_classes"), np.concatenate(values))
    ax.axvline(0.0, color="k", ls=":", lw=0.8)
    for mark in marks:
        ax.axvline(mark, color="r", ls=":", lw=0.8)
    log = metric == "loss" and loss_spans_decades(np.concatenate(values))
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="lambda", ylabel=f"{split} {metric}" + (" (log scale)" if log else ""))
    ax.legend(frameon=False, fontsize=7, title="(stationary points)", title_fontsize=7)
    labels = {bn_label(art) for art in arts}
    return labels.pop() if len(labels) == 1 else "BN: mixed treatments"


def _surface_panel(ax: plt.Axes, fig: plt.Figure, art: store.Artifact, split: str) -> str:
    splits = [s for s in (split, "test", "train") if f"{s}/loss" in art.data]
    loss = np.log10(np.clip(art[f"{splits[0]}/loss"], 1e-12, None))
    mesh = ax.contourf(art["x"], art["y"], loss.T, levels=30, cmap="viridis")
    ax.plot(0, 0, "w+", ms=10)
    ax.set(xlabel="x", ylabel="y")
    fig.colorbar(mesh, ax=ax, label=f"log10 {splits[0]} loss")
    return bn_label(art)


def plot_figure(
    panels: Sequence[Mapping[str, Any]],
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    title: str,
    split: str = "test",
    metric: str = "loss",
    marks: Sequence[float] = (),
) -> None:
    """Draws ``panels`` side by side (at most :data:`MAX_COLUMNS` per row) into ``out``.

    Args:
        panels: :func:`landscape.figures.figure_panels` of one run and epoch.
        paths: The artifact of every member, in :func:`landscape.figures.figure_members` order.
        out: The image file.
        title: The figure title.
        split, metric: What the curve panels draw (surface panels draw the loss).
        marks: lambda values marked red in the curve panels.

    Raises:
        ValueError: if ``paths`` does not hold one file per member.
    """
    members = figure_members(panels)
    if len(members) != len(paths):
        raise ValueError(f"{len(members)} curves and surfaces in the panels, {len(paths)} files")
    arts = iter([store.open(p) for p in paths])
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        if "surface" in panel:
            bn = _surface_panel(ax, fig, next(arts), split)
        else:
            lines = panel["lines"]
            bn = _curve_panel(ax, lines, [next(arts) for _ in lines], split, metric, marks)
        ax.set_title(f"{panel['title']}\n{bn}", fontsize=9)
    width = int(fig.get_size_inches()[0] * TITLE_CHARS_PER_INCH)
    fig.suptitle(textwrap.fill(title, width), fontsize=10)
    save_figure(fig, out)
