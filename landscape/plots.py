"""Matplotlib figures shared by the figure rules."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store

SPLIT_STYLE = {"train": "-", "test": "--"}


def _save(fig: plt.Figure, out: str | Path) -> None:
    """Writes a figure atomically in the format of its suffix, then closes it."""
    with store.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip(".") or "png")
    plt.close(fig)


def plot_curve(curve: str | Path, out: str | Path, title: str | None = None) -> None:
    """Loss (left) and error (right) of a 1D curve against lambda, train and test.

    The dotted black line marks the loss of a random guess, log(C) for C classes.
    """
    art = store.open(curve)
    lam = art["lambda"]
    splits = [s for s in ("train", "test") if f"{s}/loss" in art.data]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    for s in splits:
        ax_loss.plot(lam, art[f"{s}/loss"], SPLIT_STYLE[s], marker=".", label=s)
        ax_err.plot(lam, art[f"{s}/error"], SPLIT_STYLE[s], marker=".", label=s)
    num_classes = art.attrs.get("num_classes")
    if num_classes:
        ax_loss.axhline(math.log(num_classes), color="k", ls=":", lw=1, label="log(C)")
    ax_loss.set(xlabel="lambda", ylabel="loss")
    ax_err.set(xlabel="lambda", ylabel="error", ylim=(-0.02, 1.02))
    ax_loss.legend(frameon=False)
    fig.suptitle(title or Path(curve).stem)
    _save(fig, out)


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
    fig.suptitle(title or Path(surface).stem)
    _save(fig, out)


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
    fig, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    density_values = art["density"]
    ax.semilogy(art["eigenvalue"], np.clip(density_values, 1e-300, None), "k-", lw=1)
    ax.set_ylim(bottom=1e-8 * density_values.max())
    if spectrum is not None:
        spec = store.open(spectrum)
        for which, color in (("LA", "tab:red"), ("SA", "tab:blue")):
            if f"{which}/eigenvalues" in spec:
                for value in spec[f"{which}/eigenvalues"]:
                    ax.axvline(value, color=color, lw=0.8, alpha=0.7)
    ax.set(xlabel="eigenvalue", ylabel="density (log)")
    heading = title or Path(density).stem
    if trace is not None:
        tr = store.open(trace)
        heading += f"\ntr(H) = {tr.attrs['trace']:.4g} ± {tr.attrs['stderr']:.2g}"
    if "broadening" in art.attrs:
        heading += f"\nbroadening: {art.attrs['broadening']} (std {art.attrs['sigma']:.2g})"
    ax.set_title(heading, fontsize=9)
    _save(fig, out)


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
    _save(fig, out)


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
    _save(fig, out)
