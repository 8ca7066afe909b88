"""Matplotlib figures shared by the figure rules."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store

if TYPE_CHECKING:
    import pandas as pd

SPLIT_STYLE = {"train": "-", "test": "--"}


def save_figure(fig: plt.Figure, out: str | Path) -> None:
    """Writes a figure atomically in the format of its suffix, then closes it."""
    with store.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip(".") or "png")
    plt.close(fig)


def plot_curve(curve: str | Path, out: str | Path, title: str | None = None) -> None:
    """Loss (left) and error (right) of a 1D curve against lambda, train and test.

    The dotted black line marks the loss of a random guess, log(C) for C classes. A loss that
    spans more than :data:`LOG_SPAN` (exploding no-skip ResNets, V3; a low barrier between two
    minima next to steep walls, V10) is drawn on a log scale, said on the axis.
    """
    art = store.open(curve)
    lam = art["lambda"]
    splits = [s for s in ("train", "test") if f"{s}/loss" in art.data]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    for s in splits:
        ax_loss.plot(lam, art[f"{s}/loss"], SPLIT_STYLE[s], marker=".", label=s)
        ax_err.plot(lam, art[f"{s}/error"], SPLIT_STYLE[s], marker=".", label=s)
    losses = np.concatenate([art[f"{s}/loss"] for s in splits])
    chance_line(ax_loss, art.attrs.get("num_classes"), losses)
    log = loss_spans_decades(losses)
    ax_loss.set(xlabel="lambda", ylabel="loss (log scale)" if log else "loss")
    if log:
        ax_loss.set_yscale("log")
    ax_err.set(xlabel="lambda", ylabel="error", ylim=(-0.02, 1.02))
    ax_loss.legend(frameon=False)
    fig.suptitle(f"{title or Path(curve).stem}\n{bn_label(art)}", fontsize=10)
    save_figure(fig, out)


LOG_SPAN = 100.0
CHANCE_REACH = 2.0


def chance_line(ax: plt.Axes, num_classes: int | None, loss: np.ndarray) -> bool:
    """Draws the dotted log(C) line of a random guess where it does not flatten the curves.

    The line is drawn when it lies below :data:`CHANCE_REACH` times the largest finite loss;
    further above, stretching the axis to reach it would squash the curves into a flat line (a
    converged model over a small lambda range), so it is left out. Returns whether it was drawn.
    """
    finite = loss[np.isfinite(loss)]
    if not num_classes or finite.size == 0:
        return False
    chance = math.log(num_classes)
    if chance > CHANCE_REACH * finite.max():
        return False
    ax.axhline(chance, color="k", ls=":", lw=1, label="log(C)")
    return True


def loss_spans_decades(loss: np.ndarray) -> bool:
    """Whether the finite positive losses span more than :data:`LOG_SPAN` (max / min).

    >>> loss_spans_decades(np.array([0.01, 0.5, 2.0])), loss_spans_decades(np.array([0.1, 5.0]))
    (True, False)
    """
    finite = loss[np.isfinite(loss) & (loss > 0)]
    return bool(finite.size > 1 and finite.max() > LOG_SPAN * finite.min())


def plot_surface(surface: str | Path, out: str | Path, title: str | None = None) -> None:
    """Filled contours of the loss of a 2D surface (log scale), one panel per split."""
    art = store.open(surface)
    x, y = art["x"], art["y"]
    splits = [s for s in ("train", "test") if f"{s}/loss" in art.data]
    fig, axes = plt.subplots(
        1, len(splits), figsize=(4.2 * len(splits), 3.6), constrained_layout=True, squeeze=False
    )
    for ax, s in zip(axes[0], splits, strict=True):
        loss = np.log10(np.clip(art[f"{s}/loss"], 1e-12, None))
        mesh = ax.contourf(x, y, loss.T, levels=30, cmap="viridis")
        ax.plot(0, 0, "w+", ms=10)
        ax.set(xlabel="x", ylabel="y", title=f"{s}: log10 loss")
        fig.colorbar(mesh, ax=ax)
    fig.suptitle(f"{title or Path(surface).stem}\n{bn_label(art)}", fontsize=10)
    save_figure(fig, out)


BN_LABELS = {
    "keep": "BN: running statistics of theta (No UpBN)",
    "recompute": "BN recomputed per point (UpBN)",
}


def bn_label(art: store.Artifact) -> str:
    """How a curve or surface treated BN statistics, from its spec's resolved ``bn_mode``.

    A model without BN layers (attribute ``batchnorm`` false) says so: both modes are the same.
    """
    if not art.attrs.get("batchnorm", True):
        return "no BN layers"
    return BN_LABELS.get(art.spec.get("bn_mode"), f"BN: {art.spec.get('bn_mode')}")


def plot_density(
    density: str | Path,
    out: str | Path,
    spectrum: str | Path | None = None,
    trace: str | Path | None = None,
    title: str | None = None,
) -> None:
    """Hessian eigenvalue density on a log scale, extreme eigenvalues as vertical lines (V13).

    The title ends with the Gaussian broadening used (the density file's ``broadening`` and
    ``sigma`` attributes): PyHessian's convention by default, or ``density.sigma``.
    """
    art = store.open(density)
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    density_values = art["density"]
    ax.semilogy(art["eigenvalue"], np.clip(density_values, 1e-300, None), "k-", lw=1)
    ax.set_ylim(1e-8 * density_values.max(), 10 * density_values.max())
    if spectrum is not None:
        _mark_extreme_eigenvalues(ax, store.open(spectrum))
    ax.set(xlabel="eigenvalue", ylabel="density (log)")
    heading = title or Path(density).stem
    if trace is not None:
        tr = store.open(trace)
        heading += f"\ntr(H) = {tr.attrs['trace']:.4g} ± {tr.attrs['stderr']:.2g}"
    if "broadening" in art.attrs:
        source = art.attrs["broadening"].split(":")[0]  # "PyHessian" or "density.sigma"
        heading += f"\nGaussian broadening: {source}, std {art.attrs['sigma']:.2g}"
    ax.set_title(heading, fontsize=8)
    save_figure(fig, out)


def _mark_extreme_eigenvalues(ax: plt.Axes, spec: store.Artifact) -> None:
    """Vertical lines at the Lanczos eigenvalues: top (red), most negative (blue), extremes named.

    The smallest eigenvalue (SA rank 1, else the smallest top one) gets a thick line and a legend
    entry with its value, as the largest does.
    """
    values = {w: spec[f"{w}/eigenvalues"] for w in ("LA", "SA") if f"{w}/eigenvalues" in spec}
    for which, color in (("LA", "tab:red"), ("SA", "tab:blue")):
        for value in values.get(which, []):
            ax.axvline(value, color=color, lw=0.8, alpha=0.7)
    everything = np.concatenate(list(values.values())) if values else np.array([])
    if everything.size:
        low, high = everything.min(), everything.max()
        ax.axvline(low, color="tab:blue", lw=2, label=f"smallest eigenvalue {low:.4g}")
        ax.axvline(high, color="tab:red", lw=2, label=f"largest eigenvalue {high:.4g}")
        ax.legend(fontsize=7, loc="upper right", framealpha=0.9)


def plot_soa(soa: str | Path, out: str | Path, title: str | None = None) -> None:
    """A curve's points with the local quadratic at each (red) and the actual loss (grey)."""
    art = store.open(soa)
    lam, offsets = art["lambda"], art["offset"]
    fig, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    for i, center in enumerate(lam):
        if "local_loss" in art:
            ax.plot(center + offsets, art["local_loss"][i], color="0.6", lw=2)
        ax.plot(center + offsets, art["quadratic"][i], color="tab:red", lw=1)
    ax.plot(lam, art["loss"], "k.", ms=6)
    ax.set(xlabel="lambda", ylabel="loss")
    ax.set_title(title or Path(soa).stem, fontsize=9)
    save_figure(fig, out)


def plot_cosines(cosines: str | Path, out: str | Path, title: str | None = None) -> None:
    """Fig. 9's second row: per direction, |cos| with N.E.1..k (blue) then P.E.k..1 (red)."""
    art = store.open(cosines)
    names, ranks = list(art["direction"]), art["rank"]
    families = [w for w in ("SA", "LA") if f"{w}/cosines" in art]
    labels = [f"N.E.{r}" for r in ranks] if "SA" in families else []
    labels += [f"P.E.{r}" for r in ranks[::-1]] if "LA" in families else []
    colors = ["tab:blue"] * len(ranks) * ("SA" in families)
    colors += ["tab:red"] * len(ranks) * ("LA" in families)
    fig, axes = plt.subplots(
        len(names),
        1,
        figsize=(max(4, 0.35 * len(labels) + 1), 1.8 * len(names)),
        sharex=True,
        squeeze=False,
        constrained_layout=True,
    )
    for i, (ax, name) in enumerate(zip(axes[:, 0], names, strict=True)):
        rows = [art["SA/cosines"][i]] if "SA" in families else []
        rows += [art["LA/cosines"][i][::-1]] if "LA" in families else []
        ax.bar(np.arange(len(labels)), np.concatenate(rows), color=colors)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"|cos|\n{name}", fontsize=8)
    axes[-1, 0].set_xticks(np.arange(len(labels)), labels, rotation=90, fontsize=7)
    axes[0, 0].set_title(title or Path(cosines).stem, fontsize=9)
    save_figure(fig, out)


DESCENT_LABELS = {
    "g_batch": r"$g_\mathrm{batch}$",
    "theta_f - theta_cur": r"$\theta_f - \theta_\mathrm{cur}$",
}
TYPE_COLORS = {
    "v-basin": "#a6cee3",
    "v-side": "#b2df8a",
    "w-basin": "#fdbf6f",
    "w-peak": "#fb9a99",
    "vvv-basin": "#cab2d6",
    "other": "#d9d9d9",
}


def _descent_groups(names: list[str]) -> dict[str, list[int]]:
    """Columns of the descent directions by family: the batch gradients pooled, targets alone."""
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        groups.setdefault("g_batch" if name.startswith("g_batch[") else name, []).append(j)
    return groups


def plot_angles(angles: str | Path, out: str | Path, title: str | None = None) -> None:
    """Fig. 5: histograms of the angles between Gaussian and descent directions (V5).

    Left: the angles (degrees) of the Gaussian directions with the negative batch gradients
    (``g_batch[b]``, pooled) and with ``theta_f - theta_cur``, on common bins; the dotted line marks
    90 degrees. Right: the angle of each batch gradient with ``theta_f - theta_cur``, the paper's
    comparison. Undefined angles (NaN: ``theta_cur`` is ``theta_f`` at the final checkpoint) are
    left out and said so.
    """
    art = store.open(angles)
    names = [str(n) for n in art.attrs["descent_names"]]
    gaussian, between = art["gaussian"], art["between"]
    groups = _descent_groups(names)
    fig, (ax_gau, ax_dir) = plt.subplots(
        1, 2, figsize=(9, 3.4), constrained_layout=True, width_ratios=(3, 2)
    )
    finite = gaussian[np.isfinite(gaussian)]
    bins = np.histogram_bin_edges(finite, bins=30) if finite.size else np.linspace(89, 91, 31)
    for group, columns in groups.items():
        values = gaussian[:, columns].ravel()
        values = values[np.isfinite(values)]
        label = f"Gau. vs {DESCENT_LABELS.get(group, group)}"
        if values.size:
            label += (
                f" ({len(columns)}x{gaussian.shape[0]}: {values.min():.2f} to {values.max():.2f})"
            )
            weights = np.full(values.size, 1.0 / values.size)
            ax_gau.hist(values, bins=bins, weights=weights, alpha=0.55, label=label)
        else:
            ax_gau.plot([], [], " ", label=f"{label}: undefined (theta_cur = theta_f)")
    ax_gau.axvline(90.0, color="k", ls=":", lw=1)
    ax_gau.set(xlabel="angle (degrees)", ylabel="fraction of angles")
    ax_gau.set_title(f"{gaussian.shape[0]} Gaussian directions vs descent directions", fontsize=9)
    ax_gau.legend(frameon=False, fontsize=8, loc="upper left")
    ax_gau.set_ylim(top=ax_gau.get_ylim()[1] * 1.3)
    _plot_descent_angles(ax_dir, names, groups, between)
    fig.suptitle(title or Path(angles).stem, fontsize=10)
    save_figure(fig, out)


def _plot_descent_angles(ax: plt.Axes, names: list[str], groups: dict, between: np.ndarray) -> None:
    """The angle of each batch gradient with each other descent target, one dot per pair."""
    targets = [g for g in groups if g != "g_batch"]
    batches = groups.get("g_batch", [])
    rows = [(names[b], t, between[b, groups[t][0]]) for t in targets for b in batches]
    single = len(targets) == 1
    for k, (*_, angle) in enumerate(rows):
        if np.isfinite(angle):
            ax.plot(angle, k, "o", color="tab:green")
            ax.annotate(
                f"{angle:.1f}",
                (angle, k),
                xytext=(5, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        else:
            ax.text(90.0, k, "undefined: theta_cur = theta_f", ha="center", va="center", fontsize=7)
    ax.axvline(90.0, color="k", ls=":", lw=1)
    labels = [b if single else f"{b} vs {t}" for b, t, _ in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("angle (degrees)")
    ax.margins(x=0.12)  # room for the values written right of the dots
    with_target = f" with {DESCENT_LABELS.get(targets[0], targets[0])}" if single else ""
    ax.set_title(f"angle of each {DESCENT_LABELS['g_batch']}{with_target}", fontsize=9)


def predicted_loss_change(loss_change: str | Path, trace: str | Path | None = None) -> np.ndarray:
    """0.5 lambda^2 sigma^2 tr(H) per lambda of a loss-change file (Eq. 4 of the paper).

    tr(H) comes from ``trace`` (the checkpoint's trace file) when given, else from the trace the
    loss-change file recorded; sigma from its spec (``loss_change.sigma``, default 1).
    """
    art = store.open(loss_change)
    sigma = art.spec.get("loss_change", {}).get("sigma", 1.0)
    tr = store.open(trace).attrs["trace"] if trace is not None else art.attrs["trace"]
    return 0.5 * art["lambda"] ** 2 * sigma**2 * tr


def plot_loss_change(
    loss_change: str | Path,
    out: str | Path,
    trace: str | Path | None = None,
    title: str | None = None,
) -> None:
    """Fig. 13's second row: the loss change under Gaussian perturbations, a panel per lambda (V13).

    Bars: the actual change L(theta + lambda eps) - L(theta) and its second-order value
    lambda eps^T g + lambda^2 eps^T H eps / 2 over the samples, on common bins. Red line: the
    predicted mean 0.5 lambda^2 sigma^2 tr(H) (:func:`predicted_loss_change`); dashed: the
    sample mean of the actual change; dotted: zero.
    """
    art = store.open(loss_change)
    lambdas, actual, soa = art["lambda"], art["actual"], art["soa"]
    predicted = predicted_loss_change(loss_change, trace)
    fig, axes = plt.subplots(
        1, len(lambdas), figsize=(4.2 * len(lambdas), 3.4), constrained_layout=True, squeeze=False
    )
    for i, (ax, lam) in enumerate(zip(axes[0], lambdas, strict=True)):
        both = np.concatenate([actual[:, i], soa[:, i], [predicted[i], 0.0]])
        bins = np.histogram_bin_edges(both[np.isfinite(both)], bins=25)
        ax.hist(actual[:, i], bins=bins, alpha=0.6, color="tab:blue", label="actual")
        ax.hist(soa[:, i], bins=bins, alpha=0.45, color="tab:orange", label="second order")
        ax.axvline(0.0, color="k", ls=":", lw=1)
        ax.axvline(
            predicted[i], color="tab:red", lw=2, label=r"$\frac{1}{2}\lambda^2\sigma^2 tr(H)$"
        )
        mean = np.nanmean(actual[:, i])
        ax.axvline(mean, color="tab:blue", ls="--", lw=1.2, label="mean actual")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.set(xlabel=r"loss change $\delta L$", ylabel="count")
        positive = np.mean(actual[:, i] > 0)
        ax.set_title(
            f"lambda = {lam:g}: predicted {predicted[i]:.3g}, mean {mean:.3g}\n"
            f"{actual.shape[0]} samples, {100 * positive:.0f}% with loss change > 0",
            fontsize=8,
        )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    tr = store.open(trace).attrs["trace"] if trace is not None else art.attrs["trace"]
    heading = title or Path(loss_change).stem
    fig.suptitle(f"{heading}\nL(theta) = {art.attrs['loss0']:.4g}, tr(H) = {tr:.4g}", fontsize=10)
    save_figure(fig, out)


def curve_type_grid(table: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray]:
    """Rows (``model / curve / E{epoch}``), metric columns and the type of each cell (or "")."""
    keys = table[["model", "run", "curve", "epoch"]].drop_duplicates()
    keys = keys.sort_values(["model", "run", "curve", "epoch"], kind="stable")
    metric_order = ["train/loss", "test/loss", "train/error", "test/error"]
    metrics = [m for m in metric_order if m in set(table["metric"])]
    metrics += sorted(set(table["metric"]) - set(metrics))
    cells = np.full((len(keys), len(metrics)), "", dtype=object)
    rows = []
    for r, (model, run, curve, epoch) in enumerate(keys.itertuples(index=False)):
        name = model if run == model else f"{model} ({run})"
        rows.append(f"{name} / {curve} / E{epoch}")
        sub = table[(table["model"] == model) & (table["run"] == run)]
        sub = sub[(sub["curve"] == curve) & (sub["epoch"] == epoch)]
        for metric, kind, n in sub[["metric", "type", "n_stationary"]].itertuples(index=False):
            cells[r, metrics.index(metric)] = f"{kind} ({n})"
    return rows, metrics, cells


def _read_curve_table(path: str | Path) -> pd.DataFrame:
    """The taxonomy CSV; one of no curves gives an empty frame with the columns used here."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    if "type" not in frame:
        return pd.DataFrame(columns=["model", "run", "curve", "epoch", "metric", "type"])
    return frame


def plot_curve_table(table: str | Path, out: str | Path, title: str | None = None) -> None:
    """The curve taxonomy (VT) as a table image: a row per curve and epoch, a column per metric.

    Each cell names the curve type with its number of stationary points and is coloured by type
    (:data:`TYPE_COLORS`); the title counts the types over the whole table.
    """
    frame = _read_curve_table(table)
    rows, metrics, cells = curve_type_grid(frame)
    counts = frame["type"].value_counts()
    summary = ", ".join(f"{t}: {counts.get(t, 0)}" for t in TYPE_COLORS)
    label_width = max([len(r) for r in rows] + [10]) * 0.075
    width = max(label_width + 1.3 * max(len(metrics), 1), 4.5)
    fig, ax = plt.subplots(figsize=(width, 0.9 + 0.24 * (len(rows) + 1)), constrained_layout=True)
    ax.axis("off")
    if rows:
        colors = [
            ["white"] + [TYPE_COLORS.get(c.split(" ")[0], "white") for c in row] for row in cells
        ]
        grid = ax.table(
            cellText=[[label, *row] for label, row in zip(rows, cells.tolist(), strict=True)],
            cellColours=colors,
            colLabels=["model / curve / epoch", *metrics],
            colWidths=[label_width] + [1.3] * len(metrics),
            cellLoc="center",
            bbox=[0, 0, 1, 1],
        )
        grid.auto_set_font_size(False)
        grid.set_fontsize(7)
    else:
        ax.text(0.5, 0.5, "no curves", ha="center", va="center")
    counted = textwrap.fill(f"cells: type (stationary points); {summary}", int(width * 15))
    ax.set_title(f"{title or 'Curve taxonomy (VT)'}\n{counted}", fontsize=8)
    save_figure(fig, out)
