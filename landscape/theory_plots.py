"""The figure of a theory artifact (A9, :func:`landscape.theory.compute_theory`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from landscape import store
from landscape.plots import save_figure

SOFTMAX_TITLES = {
    "error": "error",
    "loss": "cross-entropy",
    "trace_p": "mean tr(P_x)",
    "trace_h": "tr(H_x)",
    "eps_g": "eps^T g",
    "eps_h_eps": "eps^T H eps",
}
NOISE_LABELS = {"raw": "raw noise", "sign_consistent": "sign-consistent noise"}


def plot_theory(theory: str | Path, out: str | Path, title: str | None = None) -> None:
    """Draws a theory artifact: (a) pre-activation histograms before/after ReLU per lambda and
    the on/off changes; (b) ReLU agreement vs lambda, raw vs sign-consistent noise; (c) the six
    softmax metrics vs lambda, raw noise above sign-consistent noise (shared y per metric)."""
    art = store.open(theory)
    lambdas, edges = art["lambda"], art["edge"]
    names = list(art.attrs["noise_names"])
    fig = plt.figure(figsize=(18, 13), layout="constrained")
    grid = fig.add_gridspec(4, 6)
    colors = plt.cm.coolwarm(np.linspace(0, 1, len(lambdas)))
    for col, (part, label) in enumerate((("pre", "before ReLU"), ("post", "after ReLU"))):
        ax = fig.add_subplot(grid[0, 3 * col : 3 * col + 3])
        for counts, lam, color in zip(art[f"relu/{part}_counts"], lambdas, colors, strict=True):
            ax.stairs(counts, edges, color=color, label=f"lambda = {lam:g}")
        ax.set_yscale("log")
        ax.set_xlabel("(w + lambda |delta| sign(w))^T h")
        ax.set_ylabel("unit-sample pairs")
        ax.set_title(f"(a) {label}, layer {art.attrs['layer']}")
        ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, 0:3])
    for i, name in enumerate(names):
        ax.plot(lambdas, art["agreement/agreement"][i], "o-", label=NOISE_LABELS[name])
    ax.set_xlabel("lambda")
    ax.set_ylabel("agreement (trace / total)")
    ax.set_title(f"(b) ReLU on/off agreement with theta_f ({art.attrs['relu_elements']} per input)")
    ax.legend()
    ax = fig.add_subplot(grid[1, 3:6])
    for key, style in (("flip_share", "o-"), ("on_to_off", "s--"), ("off_to_on", "^:")):
        ax.plot(lambdas, art[f"relu/{key}"], style, label=key.replace("_", " "))
    ax.set_xlabel("lambda")
    ax.set_ylabel("share of unit-sample pairs")
    ax.set_title("(a) on/off changes against lambda = 0 (sign-consistent delta)")
    ax.legend()
    for col, metric in enumerate(SOFTMAX_TITLES):
        values = art[f"softmax/{metric}"]
        top = None
        for i, name in enumerate(names):
            ax = fig.add_subplot(grid[2 + i, col], sharey=top)
            top = top or ax
            ax.plot(lambdas, values[i], "o-", color=f"C{i}")
            ax.axvline(0.0, color="gray", linestyle=":", linewidth=0.8)
            ax.set_title(f"(c) {SOFTMAX_TITLES[metric]}", fontsize=9)
            ax.set_xlabel("lambda")
            if col == 0:
                ax.set_ylabel(NOISE_LABELS[name])
    fig.suptitle(title or Path(theory).stem)
    save_figure(fig, out)
