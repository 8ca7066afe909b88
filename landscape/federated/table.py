"""The A10 table (final accuracy, mean +- std over seeds) and its figures, from the run files.

Accuracies are the global model's test accuracy after the last round (``final``) and averaged
over the last five rounds (``last5``, steadier under strong label skew); ``std`` is the sample
standard deviation over seeds (``ddof=1``; 0 for one seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from landscape import store
from landscape.federated.algorithm_names import ALGORITHMS

__all__ = [
    "TABLE_COLUMNS",
    "federated_table",
    "plot_federated_accuracy",
    "plot_federated_table",
    "write_federated_table",
]

TABLE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "alpha",
    "algorithm",
    "seeds",
    "rounds",
    "final_accuracy_mean",
    "final_accuracy_std",
    "last5_accuracy_mean",
    "last5_accuracy_std",
    "final_train_loss_mean",
    "final_sign_consistency_mean",
    "final_accuracies",
)


def _run_row(path: str | Path) -> dict:
    """The numbers of one run file that the table aggregates."""
    art = store.open(path)
    if art.kind != "federated":
        raise ValueError(f"{path}: a {art.kind!r} artifact, not a federated run")
    acc = art["test/accuracy"]
    return {
        "dataset": art.attrs["dataset"],
        "alpha": float(art.attrs["alpha"]),
        "algorithm": art.attrs["algorithm"],
        "seed": int(art.attrs["seed"]),
        "rounds": len(acc) - 1,
        "final": float(acc[-1]),
        "last5": float(np.mean(acc[-5:])),
        "train_loss": float(art["train/loss"][-1]),
        "sign": float(art["sign_consistency/start"][-1]),
    }


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def federated_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (dataset, alpha, algorithm) over its seeds; see :data:`TABLE_COLUMNS`.

    Rows are ordered by dataset (first seen), alpha (descending, as the paper's columns) and
    algorithm (:data:`~landscape.federated.algorithm_names.ALGORITHMS`).
    """
    runs = pd.DataFrame([_run_row(p) for p in paths])
    if runs.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    rows = []
    for (dataset, alpha, algorithm), group in runs.groupby(
        ["dataset", "alpha", "algorithm"], sort=False
    ):
        group = group.sort_values("seed")
        rows.append(
            {
                "dataset": dataset,
                "alpha": alpha,
                "algorithm": algorithm,
                "seeds": len(group),
                "rounds": int(group["rounds"].max()),
                "final_accuracy_mean": float(group["final"].mean()),
                "final_accuracy_std": _std(group["final"]),
                "last5_accuracy_mean": float(group["last5"].mean()),
                "last5_accuracy_std": _std(group["last5"]),
                "final_train_loss_mean": float(group["train_loss"].mean()),
                "final_sign_consistency_mean": float(group["sign"].mean()),
                "final_accuracies": " ".join(f"{v:.4f}" for v in group["final"]),
            }
        )
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    datasets = list(dict.fromkeys(runs["dataset"]))
    order = {name: i for i, name in enumerate(ALGORITHMS)}
    table["_d"] = table["dataset"].map(datasets.index)
    table["_a"] = table["algorithm"].map(lambda a: order.get(a, len(order)))
    table = table.sort_values(["_d", "alpha", "_a"], ascending=[True, False, True])
    return table.drop(columns=["_d", "_a"]).reset_index(drop=True)


def write_federated_table(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Writes :func:`federated_table` as CSV, atomically."""
    return store.write_csv(federated_table(paths), out)


def table_grid(table: pd.DataFrame) -> tuple[list[str], list[str], list[list[str]], np.ndarray]:
    """``(algorithms, column labels, cell texts, means)``: algorithms as rows, (dataset, alpha)
    as columns, cells ``mean +- std`` in percent (NaN mean where a combination is missing)."""
    algorithms = list(dict.fromkeys(table["algorithm"]))
    columns = list(dict.fromkeys(zip(table["dataset"], table["alpha"], strict=True)))
    means = np.full((len(algorithms), len(columns)), np.nan)
    cells = [["" for _ in columns] for _ in algorithms]
    for row in table.itertuples():
        i, j = algorithms.index(row.algorithm), columns.index((row.dataset, row.alpha))
        means[i, j] = row.final_accuracy_mean
        cells[i][j] = f"{100 * row.final_accuracy_mean:.1f} ± {100 * row.final_accuracy_std:.1f}"
    labels = [f"{d}\nα = {a:g}" for d, a in columns]
    return algorithms, labels, cells, means


def plot_federated_table(table: str | Path, out: str | Path) -> None:
    """The A10 table as an image laid out like the paper's: the best mean of a column in bold."""
    from landscape.plots import plt, save_figure

    frame = pd.read_csv(table)
    algorithms, labels, cells, means = table_grid(frame)
    width = max(2.0 + 1.3 * len(labels), 4.5)
    fig, ax = plt.subplots(
        figsize=(width, 1.2 + 0.3 * (len(algorithms) + 2)), constrained_layout=True
    )
    ax.axis("off")
    if algorithms:
        grid = ax.table(
            cellText=[[name, *row] for name, row in zip(algorithms, cells, strict=True)],
            colLabels=["algorithm", *labels],
            cellLoc="center",
            bbox=[0, 0, 1, 1],
        )
        grid.auto_set_font_size(False)
        grid.set_fontsize(8)
        for j in range(len(labels)):
            column = means[:, j]
            if np.isfinite(column).any():
                best = int(np.nanargmax(column))
                grid[best + 1, j + 1].set_text_props(fontweight="bold")
                grid[best + 1, j + 1].set_facecolor("#e8f0ff")
        for j in range(len(labels) + 1):
            grid[0, j].set_height(grid[0, j].get_height() * 1.6)
    else:
        ax.text(0.5, 0.5, "no federated runs", ha="center", va="center")
    rounds = int(frame["rounds"].max()) if len(frame) else 0
    seeds = int(frame["seeds"].min()) if len(frame) else 0
    ax.set_title(
        f"A10: test accuracy (%) after {rounds} rounds, mean ± std over {seeds} seeds",
        fontsize=9,
    )
    save_figure(fig, out)


def plot_federated_accuracy(
    paths: Sequence[str | Path], out: str | Path, title: str | None = None
) -> None:
    """Test accuracy per round, one panel per alpha, a line per algorithm (mean over seeds,
    shaded between the lowest and highest seed)."""
    from landscape.plots import plt, save_figure

    curves: dict[float, dict[str, list[np.ndarray]]] = {}
    for path in paths:
        art = store.open(path)
        alpha, algorithm = float(art.attrs["alpha"]), art.attrs["algorithm"]
        curves.setdefault(alpha, {}).setdefault(algorithm, []).append(art["test/accuracy"])
    alphas = sorted(curves, reverse=True)
    fig, axes = plt.subplots(
        1,
        max(len(alphas), 1),
        figsize=(3.6 * max(len(alphas), 1), 3.2),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    order = {name: i for i, name in enumerate(ALGORITHMS)}
    for ax, alpha in zip(axes[0], alphas, strict=False):
        for algorithm in sorted(curves[alpha], key=lambda a: order.get(a, len(order))):
            runs = np.stack(curves[alpha][algorithm])
            rounds = np.arange(runs.shape[1])
            line = ax.plot(rounds, runs.mean(0), label=f"{algorithm} ({len(runs)})", lw=1.2)
            ax.fill_between(
                rounds, runs.min(0), runs.max(0), color=line[0].get_color(), alpha=0.15, lw=0
            )
        ax.set_title(f"Dir. α = {alpha:g}", fontsize=9)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    if alphas:
        axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"A10: accuracy per round{f' ({title})' if title else ''}", fontsize=10)
    save_figure(fig, out)
