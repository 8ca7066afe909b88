"""The figure of a pair file (:func:`landscape.pairs.compute_pair`): one panel per part."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.pair_layout import PAIR_GROUPS, SSR_VARIANTS
from landscape.plots import save_figure


def plot_pair(path: str | Path, out: str | Path, title: str | None = None) -> None:
    """One panel per part of a pair file: A7 group means and stds with sign consistency, A8
    interpolation accuracy vs lambda, SSR over epochs, soups against their ingredients."""
    art = store.open(path)
    runs = art.spec["runs"]
    panels = []
    if "sign_consistency/ALL" in art.data:
        panels += [_plot_group_stat("mean", runs), _plot_group_stat("std", runs), _plot_signs]
    if "lambda" in art.data:
        panels.append(_plot_interpolation)
    if "epoch" in art.data:
        panels.append(_plot_ssr)
    if "soups/uniform" in art.data:
        panels.append(lambda ax, a: _plot_soups(ax, a, runs))
    if "bn_weights/final" in art.data:
        panels += [_plot_bn_weights(i, run) for i, run in enumerate(runs)]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        panel(ax, art)
    fig.suptitle(title or Path(path).stem)
    fig.tight_layout()
    save_figure(fig, out)


def _plot_group_stat(stat: str, runs: Sequence[str]):
    def draw(ax, art):
        x = np.arange(len(PAIR_GROUPS))
        for k, label in enumerate("ab"):
            values = [art[f"statistics/{label}/{g}/{stat}"] for g in PAIR_GROUPS]
            ax.bar(x + (k - 0.5) * 0.4, values, width=0.4, label=runs[k])
        ax.set_xticks(x, PAIR_GROUPS, rotation=45, ha="right")
        ax.set_title(f"parameter {stat} per group")
        ax.legend(fontsize=7)

    return draw


def _plot_signs(ax, art) -> None:
    groups = ["ALL", *PAIR_GROUPS]
    ax.bar(range(len(groups)), [art[f"sign_consistency/{g}"] for g in groups], color="gray")
    ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("sign consistency (share of equal signs)")


def _plot_interpolation(ax, art) -> None:
    for split in ("train", "test"):
        key = f"interpolation/{split}/accuracy"
        if key in art.data:
            gap = float(art[f"interpolation/{split}/midpoint_gap"])
            label = f"{split} (gap {gap:.3f})"
            ax.plot(art["lambda"], art[key], marker="o", ms=3, label=label)
    ax.set_xlabel("lambda: (1 - lambda) theta_A + lambda theta_B")
    ax.set_ylabel("accuracy")
    ax.set_title("interpolation")
    ax.legend(fontsize=7)


def _plot_ssr(ax, art) -> None:
    for variant in SSR_VARIANTS:
        ax.plot(art["epoch"], art[f"ssr/{variant}"], marker="o", ms=3, label=f"SSR-{variant}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("same-sign ratio")
    ax.set_title("SSR over epochs")
    ax.legend(fontsize=7)


def _plot_bn_weights(index: int, run: str):
    def draw(ax, art):
        initial, final = art["bn_weights/initial"][index], art["bn_weights/final"][index]
        bins = np.histogram_bin_edges(np.concatenate([initial, final]), bins=40)
        ax.hist(initial, bins=bins, alpha=0.6, label="initial (epoch 0)")
        ax.hist(final, bins=bins, alpha=0.6, label=f"converged (epoch {art.spec['epochs'][index]})")
        ax.axvline(0.0, color="k", ls=":", lw=0.8)
        ax.set(xlabel="BN weight", ylabel="count", title=f"{run}: BN weights")
        ax.legend(frameon=False, fontsize=7)

    return draw


def _plot_soups(ax, art, runs: Sequence[str]) -> None:
    ingredients = list(art["soups/ingredients"])
    labels = [*runs[: len(ingredients)], "uniform", "greedy"]
    values = [*ingredients, art["soups/uniform"], art["soups/greedy"]]
    colors = ["gray"] * len(ingredients) + ["tab:blue", "tab:orange"]
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, rotation=45, ha="right")
    low = min(values)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(values) + 0.02))
    ax.set_ylabel(f"{art.attrs.get('heldout', 'test')} accuracy")
    ax.set_title("model soups")
