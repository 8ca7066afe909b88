"""The plot set of a 2D surface: contour, filled contour, heatmap and 3D surface.

Every view draws one panel per metric (loss, error) and split (train, test) found in the surface
file, optionally with the loss on a log10 scale. Points whose value is NaN (never computed), +inf
or -inf (diverged), or not positive on a log scale, are masked: left out of the contours and the 3D
mesh, grey in the heatmap, marked with grey crosses in the 2D views and counted in the panel title
and the figure's footer, so a view is never blank and never hides what it left out. A panel
without a single finite value says so in its middle instead of drawing an empty frame.

No torch: these jobs read HDF5 files only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.plots import bn_label, loss_spans_decades, save_figure

SPLITS = ("train", "test")
METRICS = ("loss", "error")
VIEWS = ("contour", "contourf", "heatmap", "surface3d")
VIEW_TITLES = {
    "contour": "contours",
    "contourf": "filled contours",
    "heatmap": "heatmap",
    "surface3d": "3D surface",
}
CMAP = "viridis"
MASK_COLOR = "0.6"
LEVELS = 20


@dataclass(frozen=True)
class Panel:
    """One metric of one split, ready to draw.

    Attributes:
        split: ``"train"`` or ``"test"``.
        metric: ``"loss"`` or ``"error"``.
        values: the grid (``x`` by ``y``) as drawn, log10 where ``log``, masked where not finite.
        log: whether ``values`` are log10 of the stored values.
        nan: points stored as NaN (never computed).
        posinf: points stored as +inf.
        neginf: points stored as -inf.
        nonpositive: finite points not drawn on the log scale (zero or negative).
    """

    split: str
    metric: str
    values: np.ma.MaskedArray
    log: bool
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    nonpositive: int = 0

    @property
    def name(self) -> str:
        """The dataset it was read from, e.g. ``"test/loss"``."""
        return f"{self.split}/{self.metric}"

    @property
    def label(self) -> str:
        """E.g. ``"test loss (log10)"``."""
        return f"{self.split} {self.metric}" + (" (log10)" if self.log else "")

    @property
    def masked(self) -> int:
        """Points left out of the drawing."""
        return int(np.ma.count_masked(self.values))

    def mask_note(self) -> str:
        """What was masked and why, e.g. ``"3 NaN (not computed), 1 +inf"``; empty if nothing."""
        parts = [
            (self.nan, "NaN (not computed)"),
            (self.posinf, "+inf"),
            (self.neginf, "-inf"),
            (self.nonpositive, "<= 0 on the log scale"),
        ]
        return ", ".join(f"{n} {what}" for n, what in parts if n)


def masked_grid(values: np.ndarray, log: bool = False) -> tuple[np.ma.MaskedArray, dict]:
    """The grid masked where it cannot be drawn, and counts of why.

    Args:
        values: the stored grid.
        log: draw log10 of the values; zero and negative values are then masked too.

    Returns:
        ``(masked values, {"nan", "posinf", "neginf", "nonpositive"})``; the masked array's data
        is finite everywhere (masked points hold 0), so no drawing code meets NaN or inf.

    >>> m, counts = masked_grid(np.array([[1.0, np.nan], [np.inf, 100.0]]), log=True)
    >>> m.tolist(), counts["nan"], counts["posinf"]
    ([[0.0, None], [None, 2.0]], 1, 1)
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    counts = {
        "nan": int(np.isnan(values).sum()),
        "posinf": int(np.isposinf(values).sum()),
        "neginf": int(np.isneginf(values).sum()),
        "nonpositive": int((finite & (values <= 0)).sum()) if log else 0,
    }
    keep = finite & (values > 0) if log else finite
    drawn = np.zeros_like(values)
    drawn[keep] = np.log10(values[keep]) if log else values[keep]
    return np.ma.MaskedArray(drawn, mask=~keep), counts


def resolve_log(art: store.Artifact, log: bool | str) -> bool:
    """Whether the loss is drawn on a log scale: ``log`` itself, or for ``"auto"`` whether the
    finite positive losses of all splits span more than a factor 100 (as 1D curves decide)."""
    if log == "auto":
        losses = [art[f"{s}/loss"].ravel() for s in SPLITS if f"{s}/loss" in art.data]
        return bool(losses) and loss_spans_decades(np.concatenate(losses))
    if not isinstance(log, bool):
        raise ValueError(f"surface_plots.log: expected true, false or 'auto', got {log!r}")
    return log


def panels(art: store.Artifact, log: bool | str = "auto") -> list[Panel]:
    """Every metric and split of a surface that is present, loss rows first.

    Args:
        art: the surface.
        log: loss on a log10 scale (True, False or ``"auto"``, see :func:`resolve_log`); the
            error, a fraction in [0, 1], is always drawn as it is.

    Raises:
        ValueError: if the file has no ``x`` and ``y`` scales or no ``{split}/{metric}`` grid.
    """
    if "x" not in art.data or "y" not in art.data:
        raise ValueError(f"{art.path}: not a 2D surface (no x and y scales)")
    log_loss = resolve_log(art, log)
    out = []
    for metric in METRICS:
        for split in SPLITS:
            name = f"{split}/{metric}"
            if name not in art.data:
                continue
            is_log = log_loss and metric == "loss"
            values, counts = masked_grid(art[name], is_log)
            out.append(Panel(split, metric, values, is_log, **counts))
    if not out:
        raise ValueError(f"{art.path}: no train/test loss or error grid to plot")
    return out


MASK_SHOWN_AS = {
    "contour": "grey crosses",
    "contourf": "grey crosses",
    "heatmap": "grey cells",
    "surface3d": "holes in the mesh",
}


def footer(items: list[Panel], shown_as: str = "left out") -> str:
    """The figure's footer: what every panel masked and how it shows, or that nothing was."""
    notes = [f"{p.label}: {p.mask_note()}" for p in items if p.masked]
    if not notes:
        return "every grid point finite and drawn"
    return f"masked ({shown_as}): " + "; ".join(notes)


def _contourable(values: np.ma.MaskedArray) -> bool:
    """Whether contours can be drawn: a 2x2 grid or more with at least two distinct values."""
    finite = values.compressed()
    return min(values.shape) >= 2 and finite.size >= 2 and finite.min() < finite.max()


def _levels(values: np.ma.MaskedArray) -> np.ndarray:
    finite = values.compressed()
    return np.linspace(finite.min(), finite.max(), LEVELS)


def _mark_masked(ax: plt.Axes, x: np.ndarray, y: np.ndarray, panel: Panel) -> None:
    mask = np.ma.getmaskarray(panel.values)
    if mask.any():
        xs, ys = np.meshgrid(x, y, indexing="ij")
        ax.plot(xs[mask], ys[mask], "x", color=MASK_COLOR, ms=4, mew=1, label="masked")


def _say_empty(ax: plt.Axes, x: np.ndarray, y: np.ndarray, panel: Panel, three_d=False) -> None:
    text = f"no finite value to draw\n{panel.mask_note()}"
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    if three_d:
        ax.text2D(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    else:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _heatmap(ax, x, y, panel):
    cmap = plt.get_cmap(CMAP).with_extremes(bad=MASK_COLOR)
    return ax.pcolormesh(x, y, panel.values.T, shading="nearest", cmap=cmap)


def draw_2d(ax: plt.Axes, view: str, x: np.ndarray, y: np.ndarray, panel: Panel):
    """Draws one 2D view of a panel; a grid too flat or small for contours becomes a heatmap.

    Returns:
        The mappable drawn (for the colorbar), or None for a panel without a finite value.
    """
    if panel.values.count() == 0:
        _say_empty(ax, x, y, panel)
        return None
    if view == "heatmap" or not _contourable(panel.values):
        mappable = _heatmap(ax, x, y, panel)
    elif view == "contour":
        mappable = ax.contour(x, y, panel.values.T, levels=_levels(panel.values), cmap=CMAP)
    else:
        mappable = ax.contourf(x, y, panel.values.T, levels=_levels(panel.values), cmap=CMAP)
    _mark_masked(ax, x, y, panel)
    ax.plot(0, 0, "+", color="k" if view == "contour" else "w", ms=10)
    return mappable


def draw_3d(ax, x: np.ndarray, y: np.ndarray, panel: Panel):
    """Draws a panel as a 3D surface; masked points leave holes. Returns the mesh or None."""
    if panel.values.count() == 0 or min(panel.values.shape) < 2:
        _say_empty(ax, x, y, panel, three_d=True)
        return None
    xs, ys = np.meshgrid(x, y, indexing="ij")
    z = panel.values.filled(np.nan)
    finite = panel.values.compressed()
    return ax.plot_surface(
        xs, ys, z, cmap=CMAP, vmin=finite.min(), vmax=finite.max(), linewidth=0, antialiased=False
    )


def plot_view(
    art: store.Artifact, view: str, items: list[Panel], out: str | Path, title: str
) -> None:
    """One view of every panel (rows: loss, error; columns: splits), written to ``out``."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    x, y = art["x"], art["y"]
    metrics = [m for m in METRICS if any(p.metric == m for p in items)]
    splits = [s for s in SPLITS if any(p.split == s for p in items)]
    width, height = 4.6 * len(splits), 3.9 * len(metrics) + 0.6
    fig = plt.figure(figsize=(width, height))
    for panel in items:
        index = metrics.index(panel.metric) * len(splits) + splits.index(panel.split) + 1
        if view == "surface3d":
            ax = fig.add_subplot(len(metrics), len(splits), index, projection="3d")
            mappable = draw_3d(ax, x, y, panel)
            ax.set(xlabel="x", ylabel="y")
        else:
            ax = fig.add_subplot(len(metrics), len(splits), index)
            mappable = draw_2d(ax, view, x, y, panel)
            ax.set(xlabel="x", ylabel="y")
        heading = panel.label
        if panel.masked:
            heading += f"\n{panel.masked} of {panel.values.size} masked"
        ax.set_title(heading, fontsize=9)
        if mappable is not None:
            fig.colorbar(mappable, ax=ax, shrink=0.7, pad=0.12 if view == "surface3d" else 0.05)
    fig.suptitle(f"{title}: {VIEW_TITLES[view]}\n{bn_label(art)}", fontsize=10)
    note = footer(items, MASK_SHOWN_AS[view])
    fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=7, wrap=True)
    # Fixed margins: a layout engine would draw the figure once more (a third of the time).
    fig.subplots_adjust(
        left=0.85 / width,
        right=1 - 0.2 / width,
        bottom=0.75 / height,
        top=1 - 0.85 / height,
        wspace=0.4,
        hspace=0.5,
    )
    save_figure(fig, out)


def plot_surface_set(
    surface: str | Path,
    outs: Mapping[str, str | Path],
    log: bool | str = "auto",
    title: str | None = None,
) -> list[Panel]:
    """Writes the views of ``outs`` (``{view: path}``, views from :data:`VIEWS`) of a surface.

    Args:
        surface: the surface HDF5 file.
        outs: the figure to write for each view.
        log: loss on a log10 scale: True, False or ``"auto"`` (see :func:`resolve_log`).
        title: the figures' title; the file stem by default.

    Returns:
        The panels drawn.
    """
    art = store.open(surface)
    items = panels(art, log)
    for view, out in outs.items():
        plot_view(art, view, items, out, title or Path(surface).stem)
    return items
