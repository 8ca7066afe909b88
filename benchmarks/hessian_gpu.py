"""Device check: top-5 Hessian eigenpairs of ResNet-56 on 10,000 CIFAR-shaped images.

Issue 5's GPU target: on one H100, the top-5 eigenpairs of ResNet-56 (``{"arch": "resnet",
"depth": 56}``, 855,770 parameters) over 10,000 CIFAR-shaped images in 30 s or less, about 22
Hessian-vector products at well under 1.5 s each. One run on the given device:

- the time of one product by each method of :class:`landscape.hessian.HessianLinearOperator`
  (``jvp`` forward-over-reverse, ``double_backward`` as PyHessian; ``retained`` only on request,
  it holds the graphs of all batches at once), median of ``--repeats`` after a warm-up;
- :func:`landscape.hessian.lanczos` top-``k`` (``which="LA"``) with ``method="auto"``, wall clock
  from model and data to the eigenpairs, with products and residuals;
- the exact trace :func:`landscape.gauss_newton.ggn_trace` with its diagonal check (one entry
  of every parameter tensor, at least 16).

Weights: the seeded initialization (``torch.manual_seed(0)``), not a trained model: product
times do not depend on the weights, convergence does a little. Data: seeded standard-normal
images and uniform labels on the device, in batches of ``--batch-size`` (nothing is read or
downloaded). Peak device memory is reported per row.

Run ``python benchmarks/hessian_gpu.py`` on a GPU machine (a few minutes); it writes
``benchmarks/results/hessian_gpu.md``. ``--depth 8 --samples 64 --batch-size 32 --device cpu
--out /tmp/check.md`` checks the script itself in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from _machine import machine_info

from landscape.gauss_newton import ggn_trace
from landscape.hessian import HessianLinearOperator, lanczos, time_matvec
from landscape.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 30.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(device: torch.device, fn: Callable[[], object]) -> tuple[object, float, float]:
    """``(result, seconds, peak device memory in GiB)`` of one call."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else np.nan
    return result, seconds, peak


def batches(samples: int, batch_size: int, device: torch.device) -> list:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    return [
        (x[i : i + batch_size].to(device), y[i : i + batch_size].to(device))
        for i in range(0, samples, batch_size)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-6, help="lanczos residual tolerance")
    parser.add_argument("--methods", nargs="+", default=["jvp", "double_backward"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "hessian_gpu.md"
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model({"arch": "resnet", "depth": args.depth}, 10, (3, 32, 32)).to(device)
    data = batches(args.samples, args.batch_size, device)
    n = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine_info()["cpu"]
    rows = []

    def row(what: str, seconds: float, products: int | str, peak: float, notes: str) -> None:
        rows.append(f"| {what} | {seconds:.3f} | {products} | {peak:.1f} | {notes} |")
        print(rows[-1], flush=True)

    for method in args.methods:
        op = HessianLinearOperator(model, data, method=method)
        median, _, peak = measured(device, lambda op=op, m=method: time_matvec(op, m, args.repeats))
        row(f"one product, `{method}`", median, 1, peak, f"median of {args.repeats}")

    def eigenpairs():
        op = HessianLinearOperator(model, data)
        return op, lanczos(op, args.k, which="LA", tol=args.tol)

    (op, pairs), seconds, peak = measured(device, eigenpairs)
    values = ", ".join(f"{v:.5g}" for v in pairs.eigenvalues)
    row(
        f"lanczos top-{args.k}, `auto` = `{op.chosen_method}`",
        seconds,
        op.num_matvecs,
        peak,
        f"eigenvalues {values}; largest residual {pairs.residuals.max():.1e} (tol {args.tol:g})",
    )
    met = seconds <= TARGET_SECONDS

    def trace():
        op = HessianLinearOperator(model, data)
        return op, ggn_trace(op, checks=16)

    (op, result), seconds, peak = measured(device, trace)
    row(
        "exact trace (`ggn_trace`, a check per tensor)",
        seconds,
        op.num_matvecs,
        peak,
        f"tr H = {result.trace:.6g}; diagonal check {result.max_difference:.1e}",
    )

    info = machine_info()
    text = "\n".join(
        [
            "# Hessian device check: ResNet-56 top-5 eigenpairs",
            "",
            f"- date: {info['date']}; torch {info['torch']}; device: {name}",
            f"- model: ResNet-{args.depth} (n = {n:,}), seeded initialization, eval-mode BN;"
            f" data: {args.samples:,} seeded random 3x32x32 images in batches of "
            f"{args.batch_size}; float32",
            f"- target: top-5 in <= {TARGET_SECONDS:g} s on one H100: "
            + ("met" if met else "NOT met")
            + " (see the lanczos row)",
            "",
            "| what | time (s) | products | peak memory (GiB) | notes |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
