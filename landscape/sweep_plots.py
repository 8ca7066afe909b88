"""Figures of sweeps (:mod:`landscape.sweeps`), laid out by the sweep block's ``plot``.

- ``kind: grid`` (A1): a panel per value of ``cols`` (columns) and of ``rows`` (rows), values in
  ``vary`` order (``rows: sign`` with ``[none, consistent]`` puts the raw row above the
  sign-consistent one, as in the paper); in each panel one line per combination of the other
  varied keys (``lines`` first), ``metric`` against lambda; with ``average: <key>`` a line is
  the mean over that key's values (e.g. direction seeds), shaded from their min to their max.
- ``kind: ratio`` (A2): ``metric``'s mean over the +lambda side (solid) and over the -lambda
  side (dashed) along the varied key ``x`` (default: the first), placed at the measured share
  of sign-consistent elements (``axis: sign_share``, the default) or at the key's values
  (``axis: value``); one pair of lines per combination of the other varied keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.plots import bn_label, save_figure
from landscape.sweep_table import vary_in_order

PLOT_DEFAULTS = {"kind": "grid", "axis": "sign_share", "metric": "test/error"}


def _values(art: store.Artifact, key: str) -> list[Any]:
    return list(art[f"vary/{key}"])


def _distinct(values: Sequence[Any]) -> list[Any]:
    """Values in order of first appearance (the ``vary`` order)."""
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _line_keys(keys: Sequence[str], plot: Mapping[str, Any], placed: Sequence[str]) -> list[str]:
    rest = [k for k in keys if k not in placed]
    first = plot.get("lines")
    return ([first] if first in rest else []) + [k for k in rest if k != first]


def _line_groups(art: store.Artifact, idx: Sequence[int], keys: Sequence[str]) -> list[list[int]]:
    """``idx`` grouped by their values of ``keys`` (groups in sweep order)."""
    groups: dict[tuple, list[int]] = {}
    for i in idx:
        groups.setdefault(tuple(art[f"vary/{k}"][i] for k in keys), []).append(i)
    return list(groups.values())


def _line_label(art: store.Artifact, keys: Sequence[str], i: int) -> str:
    """``key=value`` of the line's keys; ``_nolegend_`` where the panel has one line."""
    return ", ".join(f"{k}={art[f'vary/{k}'][i]}" for k in keys) or "_nolegend_"


def grid_layout(art: store.Artifact, plot: Mapping[str, Any]) -> dict[str, Any]:
    """Panels of a grid figure: ``rows`` and ``cols`` (value lists, ``[None]`` for none) and
    ``panels[(r, c)]``, the variant indices drawn in panel ``(r, c)`` in sweep order."""
    rows_key, cols_key = plot.get("rows"), plot.get("cols")
    rows = _distinct(_values(art, rows_key)) if rows_key else [None]
    cols = _distinct(_values(art, cols_key)) if cols_key else [None]
    panels: dict[tuple[int, int], list[int]] = {}
    for i in range(len(art["variant"])):
        r = rows.index(art[f"vary/{rows_key}"][i]) if rows_key else 0
        c = cols.index(art[f"vary/{cols_key}"][i]) if cols_key else 0
        panels.setdefault((r, c), []).append(i)
    return {"rows": rows, "cols": cols, "panels": panels}


def side_means(art: store.Artifact, plot: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The data of a ratio figure: per line label ``{"x", "pos", "neg"}`` sorted by ``x``.

    ``pos``/``neg`` are the sweep's analysis ``mean_pos``/``mean_neg`` of ``metric``.
    """
    plot = {**PLOT_DEFAULTS, **plot}
    keys = list(vary_in_order(art.spec))
    x_key, metric = plot.get("x", keys[0]), plot["metric"]
    x = art["direction/sign_share"] if plot["axis"] == "sign_share" else art[f"vary/{x_key}"]
    others = [k for k in keys if k != x_key]
    lines: dict[str, list[int]] = {}
    for i in range(len(art["variant"])):
        label = ", ".join(f"{k}={art[f'vary/{k}'][i]}" for k in others)
        lines.setdefault(label, []).append(i)
    out = {}
    for label, idx in lines.items():
        idx = np.array(idx)[np.argsort(np.asarray(x, dtype=float)[idx], kind="stable")]
        out[label] = {
            "x": np.asarray(x, dtype=float)[idx],
            "pos": art[f"analysis/{metric}/mean_pos"][idx],
            "neg": art[f"analysis/{metric}/mean_neg"][idx],
        }
    return out


def plot_sweep(
    sweep: str | Path, out: str | Path, plot: Mapping[str, Any], title: str | None = None
) -> None:
    """Draws a sweep file as its block's ``plot`` says (module docstring)."""
    art = store.open(sweep)
    plot = {**PLOT_DEFAULTS, **plot}
    if plot["kind"] == "ratio":
        fig = _ratio_figure(art, plot)
    else:
        fig = _grid_figure(art, plot)
    fig.suptitle(f"{title or Path(sweep).stem}\n{bn_label(art)}", fontsize=10)
    save_figure(fig, out)


def _grid_figure(art: store.Artifact, plot: Mapping[str, Any]) -> plt.Figure:
    layout = grid_layout(art, plot)
    rows, cols, metric = layout["rows"], layout["cols"], plot["metric"]
    keys = list(vary_in_order(art.spec))
    average = plot.get("average")
    lines = _line_keys(keys, plot, [plot.get("rows"), plot.get("cols"), average])
    fig, axes = plt.subplots(
        len(rows),
        len(cols),
        figsize=(2.6 * len(cols) + 0.6, 2.3 * len(rows) + 0.8),
        squeeze=False,
        sharex=True,
        sharey=True,
        constrained_layout=True,
    )
    lam, values = art["lambda"], art[metric]
    for (r, c), idx in layout["panels"].items():
        ax = axes[r][c]
        for group in _line_groups(art, idx, lines):
            curves = values[group]
            label = _line_label(art, lines, group[0])
            line = ax.plot(lam, curves.mean(axis=0), marker=".", markersize=3, label=label)[0]
            if len(group) > 1:
                low, high = curves.min(axis=0), curves.max(axis=0)
                ax.fill_between(lam, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.axvline(0.0, color="black", linestyle=":", linewidth=0.8)
        head = [
            f"{plot[k]}={v}" for k, v in (("cols", cols[c]), ("rows", rows[r])) if v is not None
        ]
        ax.set_title("\n".join(head), fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("lambda")
    for row in axes:
        row[0].set_ylabel(f"{metric} (mean over {average})" if average else metric)
    if lines:
        axes[0][0].legend(frameon=False, fontsize=7)
    return fig


def _ratio_figure(art: store.Artifact, plot: Mapping[str, Any]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    for n, (label, data) in enumerate(side_means(art, plot).items()):
        color = f"C{n}"
        suffix = f" ({label})" if label else ""
        ax.plot(data["x"], data["pos"], "-o", color=color, label=f"+lambda side{suffix}")
        ax.plot(data["x"], data["neg"], "--s", color=color, label=f"-lambda side{suffix}")
    keys = list(vary_in_order(art.spec))
    x_label = (
        "share of sign-consistent elements (measured)"
        if plot["axis"] == "sign_share"
        else str(plot.get("x", keys[0]))
    )
    ax.set(xlabel=x_label, ylabel=f"mean {plot['metric']}")
    ax.legend(frameon=False, fontsize=7)
    return fig
