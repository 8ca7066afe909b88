"""Device check: a 51x51 ResNet-56 loss surface with UpBN, naive loop against the grid engine.

Issue 16's GPU targets, on one H100-class GPU: a 51x51 surface of ResNet-56 (``{"arch":
"resnet", "depth": 56}``, 855,770 parameters) over 50,000 CIFAR-shaped images per point, BN
statistics recomputed per point ("UpBN") on 10% of them, in 3 minutes or less in bf16 (loss
within 1e-2 relative of fp32) and 10 minutes or less in TF32; and a 200-epoch training run of
the papers' recipe in 15 minutes or less. One run on the given device:

- the matmul peak of the device, measured here: a large ``torch.mm`` in fp32 (IEEE), TF32 and
  bf16, best of three loops;
- the surface, a few points of it (``--points``, spread over the grid, after ``--warmup`` points
  at its centre that pay set-up and compilation), in seconds per point, points/s, minutes per
  surface (set-up and compile time added once), achieved TFLOP/s against the peak of the row's
  precision, peak device memory and the largest relative loss difference to the naive fp32 row
  at the same points: the naive way of tomgoldstein/loss-landscape (fp32, ``load_state_dict`` of
  ``theta + a d1 + b d2`` per point, BN running statistics reset and re-estimated in train mode
  with ``momentum=None``, then an eval pass in batches of 128 with a host sync per batch) and
  :class:`landscape.grid.GridEvaluator` in fp32, TF32 + channels_last and bf16 autocast +
  channels_last, eager and ``torch.compile``-d (``--no-compile`` leaves the compiled row out);
- the time of one training epoch of the papers' recipe (SGD, lr 0.1, momentum 0.9, weight decay
  5e-4, batch 128; :func:`landscape.train.train_epoch` with random crop and flip on the device)
  in fp32 and in bf16 + channels_last, and its 200-epoch extrapolation.

Directions: two filter-normalized Gaussian directions (``bias_bn: zero``, seeds 1 and 2), drawn on
the CPU. Weights: the seeded initialization (``torch.manual_seed(0)``), not a trained model: the
times do not depend on the weights, the precision differences do a little (item 1's tests bound
those on a trained BN CNN, ``tests/test_eval_options.py``). Data: seeded standard-normal images and
uniform labels, made on the device (nothing is read or downloaded); the BN statistics come from its
first 10%, in batches of ``--bn-batch-size`` shared by every row, so that all rows estimate the
same statistics. Evaluation rows run with the IEEE fp32 defaults for matmuls and cuDNN convolutions
(PyTorch's own default lets cuDNN use TF32), so that only a row's ``precision`` changes the
arithmetic; training runs with PyTorch's defaults, as :mod:`landscape.train` does. FLOPs: forward
FLOPs of one image by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and the
linear layer), times the images every point passes through (evaluation and BN recompute).

Run ``python benchmarks/grid_gpu.py`` on a GPU machine (a few minutes, most of it compilation and
the naive rows); it writes ``benchmarks/results/grid_gpu.md``. ``--depth 8 --samples 128 --grid
3 --points 2 --train-samples 128 --no-compile --device cpu --out /tmp/check.md`` checks the
script itself in under a minute on a CPU (``tests/test_grid_gpu.py``).
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_info
from hessian_gpu import measured
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from landscape.augment import CropFlip
from landscape.data import TensorSplit
from landscape.directions import make_direction
from landscape.grid import GridEvaluator
from landscape.models import build_model
from landscape.precision import float32_precision
from landscape.train import TrainConfig, make_optimizer, train_epoch

ROOT = Path(__file__).resolve().parents[1]
TARGET_BF16_MINUTES = 3.0
TARGET_TF32_MINUTES = 10.0
TARGET_LOSS_REL = 1e-2
TARGET_TRAIN_MINUTES = 15.0
PAPER_EPOCHS = 200
NAIVE_BATCH = 128
TRAIN_BATCH = 128
DIRECTION = {"kind": "noise", "distribution": "gaussian", "normalization": "filter"}
_BN = nn.modules.batchnorm._BatchNorm

ENGINE_ROWS = {  # label: GridEvaluator options; the compiled row is left out by --no-compile
    "engine fp32": {},
    "engine fp32, bn_recompute functional": {"bn_recompute": "functional"},
    "engine tf32, channels_last, bn_recompute functional": {
        "precision": "tf32",
        "channels_last": True,
        "bn_recompute": "functional",
    },
    "engine bf16, channels_last, bn_recompute functional": {
        "precision": "bf16",
        "channels_last": True,
        "bn_recompute": "functional",
    },
    "engine bf16, channels_last, bn_recompute functional, compile": {
        "precision": "bf16",
        "channels_last": True,
        "bn_recompute": "functional",
        "compile": True,
    },
}
TRAIN_ROWS = {  # label: TrainConfig precision options
    "training fp32": {},
    "training bf16, channels_last": {"precision": "bf16", "channels_last": True},
}


@dataclass
class Row:
    """One evaluation row: per-point time over the measured points and what it cost."""

    method: str
    precision: str
    seconds: float  # per point, steady state
    setup: float  # set-up and compilation, paid once per surface
    peak: float  # GiB
    losses: np.ndarray
    rel_diff: float = math.nan
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- set-up


def matmul_tflops(device: torch.device, precision: str, n: int, repeats: int = 10) -> float:
    """TFLOP/s of an ``n x n`` by ``n x n`` ``torch.mm`` in ``fp32`` (IEEE), ``tf32`` or
    ``bf16``: best of three loops of ``repeats`` products, after a warm-up product."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, generator=gen).to(dtype)
    out = torch.empty_like(a)

    def products() -> None:
        for _ in range(repeats):
            torch.mm(a, b, out=out)

    best = math.inf
    with float32_precision("tf32" if precision == "tf32" else "ieee"):
        torch.mm(a, b, out=out)
        for _ in range(3):
            _, seconds, _ = measured(device, products)
            best = min(best, seconds / repeats)
    return 2 * n**3 / best / 1e12


def images(samples: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Seeded standard-normal ``(samples, 3, 32, 32)`` images and uniform labels, on ``device``."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(samples, 3, 32, 32, device=device, generator=gen)
    y = torch.randint(0, 10, (samples,), device=device, generator=gen)
    return x, y


def forward_flops(model: nn.Module) -> int:
    """Forward FLOPs of one 3x32x32 image (``FlopCounterMode``: convolutions, linear layers)."""
    probe = copy.deepcopy(model).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        probe(torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device))
    return int(counter.get_total_flops())


def grid_coords(n: int) -> np.ndarray:
    """``(n*n, 2)`` coordinates over ``[-1, 1]^2``, x major."""
    xs = np.linspace(-1.0, 1.0, n)
    return np.stack(np.meshgrid(xs, xs, indexing="ij"), axis=-1).reshape(-1, 2)


def measured_points(total: int, points: int) -> np.ndarray:
    """``points`` grid indices spread evenly from the first point to the last."""
    return np.unique(np.linspace(0, total - 1, points).round().astype(int))


# ----------------------------------------------------------------------------- surface rows


@torch.no_grad()
def naive_points(
    model: nn.Module,
    dirs: Sequence[dict[str, Tensor]],
    coords: np.ndarray,
    bn_batches: Sequence[tuple[Tensor, Tensor]],
    x: Tensor,
    y: Tensor,
) -> np.ndarray:
    """Losses by the per-point loop of tomgoldstein/loss-landscape, one private net.

    Per point: ``load_state_dict`` of ``theta + a d1 + b d2``; BN running statistics reset and
    re-estimated over ``bn_batches`` in train mode with ``momentum=None`` (a cumulative
    average); the mean cross-entropy over ``x`` in eval mode, in batches of 128, summed on the
    host batch by batch.
    """
    net = copy.deepcopy(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    bns = [m for m in net.modules() if isinstance(m, _BN)]
    losses = np.empty(len(coords))
    for p, (a, b) in enumerate(coords):
        state = dict(base)
        for name, d1 in dirs[0].items():
            state[name] = base[name] + float(a) * d1 + float(b) * dirs[1][name]
        net.load_state_dict(state)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        net.train()
        for xb, _ in bn_batches:
            net(xb)
        net.eval()
        total = 0.0
        for start in range(0, len(y), NAIVE_BATCH):
            xb, yb = x[start : start + NAIVE_BATCH], y[start : start + NAIVE_BATCH]
            total += F.cross_entropy(net(xb), yb).item() * len(yb)
        losses[p] = total / len(y)
    return losses


def timed_row(
    method: str,
    precision: str,
    device: torch.device,
    evaluate,
    warm: np.ndarray,
    points: np.ndarray,
) -> Row:
    """Times ``evaluate(coords)`` (losses of those points) on the warm-up points, then on the
    measured ones; set-up = warm-up time less the steady time of as many points."""
    with float32_precision("ieee"):
        _, warm_s, warm_peak = measured(device, lambda: evaluate(warm))
        losses, seconds, peak = measured(device, lambda: evaluate(points))
    per_point = seconds / len(points)
    setup = max(warm_s - per_point * len(warm), 0.0)
    row = Row(method, precision, per_point, setup, max(warm_peak, peak), np.asarray(losses))
    print(f"{method}: {per_point:.3f} s/point, set-up {setup:.1f} s", flush=True)
    return row


def engine_row(method, options, args, device, model, dirs, bn_batches, split, warm, points) -> Row:
    """One :class:`GridEvaluator` configuration, built afresh and timed like the naive row."""
    evaluator = GridEvaluator(
        model,
        dirs,
        bn_mode="recompute",
        bn_batches=bn_batches,
        batch_size=args.eval_batch_size,
        **options,
    )
    row = timed_row(
        method,
        options.get("precision", "fp32"),
        device,
        lambda c: evaluator(c, split)["data"]["loss"],
        warm,
        points,
    )
    if evaluator.functional:
        row.notes.append(f"{evaluator.folded} conv-BN pairs folded")
    return row


def surface_rows(args, device, model, dirs, x, y) -> tuple[list[Row], list[str]]:
    """The naive row, then one row per engine configuration, over the same points.

    Returns the rows and a line for each compiled row that could not run (compilation needs a
    working toolchain); every other failure is raised.
    """
    coords = grid_coords(args.grid)
    points = coords[measured_points(len(coords), args.points)]
    warm = coords[[len(coords) // 2] * args.warmup]
    bn_samples = max(1, round(args.bn_fraction * len(y)))
    bn_batches = [
        (x[i:stop], y[i:stop])
        for i in range(0, bn_samples, args.bn_batch_size)
        for stop in [min(i + args.bn_batch_size, bn_samples)]
    ]
    device_dirs = [{k: v.to(device) for k, v in d.items()} for d in dirs]
    rows = [
        timed_row(
            f"naive: load_state_dict, batch {NAIVE_BATCH}",
            "fp32",
            device,
            lambda c: naive_points(model, device_dirs, c, bn_batches, x, y),
            warm,
            points,
        )
    ]
    split = {"data": TensorSplit(x, y, device)}
    skipped = []
    for method, options in ENGINE_ROWS.items():
        if options.get("compile") and args.no_compile:
            continue
        try:
            rows.append(
                engine_row(
                    method, options, args, device, model, dirs, bn_batches, split, warm, points
                )
            )
        except Exception as exc:
            if not options.get("compile"):
                raise
            skipped.append(f"`{method}` not run: {type(exc).__name__}: {str(exc)[:200]}")
            print(skipped[-1], flush=True)
    reference = rows[0].losses
    for row in rows:
        row.rel_diff = float(np.max(np.abs(row.losses - reference) / np.abs(reference)))
    rows[0].notes.append(
        f"reference; loss in [{reference.min():.4g}, {reference.max():.4g}] at the measured points"
    )
    return rows, skipped


# ----------------------------------------------------------------------------- training rows


def epoch_time(
    args, device: torch.device, x: Tensor, y: Tensor, options: dict
) -> tuple[float, float, float]:
    """``(seconds, mean training loss, peak GiB)`` of one epoch of the papers' recipe.

    A fresh seeded model is warmed up on ``--train-warmup-batches`` batches (kernel selection,
    allocator), then one epoch over the first ``--train-samples`` images is timed, with random
    crop (padding 4) and flip on the device.
    """
    cfg = TrainConfig(
        epochs=PAPER_EPOCHS,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        batch_size=TRAIN_BATCH,
        **options,
    )
    torch.manual_seed(0)
    model = build_model({"arch": "resnet", "depth": args.depth}, 10, (3, 32, 32)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    data = TensorSplit(x[: args.train_samples], y[: args.train_samples], device)
    warm = data.subset(min(len(data), args.train_warmup_batches * cfg.batch_size))
    augment = CropFlip(pad=4, flip=True)
    train_epoch(model, optimizer, warm, cfg, 0, augment=augment)
    loss, seconds, peak = measured(
        device, lambda: train_epoch(model, optimizer, data, cfg, 1, augment=augment)
    )
    return seconds, loss, peak


def training_lines(args, device: torch.device, x: Tensor, y: Tensor) -> tuple[list[str], float]:
    """Table lines of the training rows and the fastest 200-epoch extrapolation in minutes."""
    lines, best = [], math.inf
    scale = 50_000 / min(args.train_samples, len(y))
    for label, options in TRAIN_ROWS.items():
        seconds, loss, peak = epoch_time(args, device, x, y, options)
        minutes = PAPER_EPOCHS * seconds * scale / 60
        best = min(best, minutes)
        steps = math.ceil(min(args.train_samples, len(y)) / TRAIN_BATCH)
        lines.append(
            f"| {label} | {seconds:.3f} | {steps / seconds:.1f} | {minutes:.1f} "
            f"| {fmt(peak, '.2f')} | {loss:.6f} |"
        )
        print(lines[-1], flush=True)
    return lines, best


# ----------------------------------------------------------------------------- report


def fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def surface_minutes(row: Row, total: int) -> float:
    return (row.seconds * total + row.setup) / 60


def surface_table(rows: list[Row], total: int, flops_per_point: float, peaks: dict) -> list[str]:
    lines = [
        "| method | precision | s/point | points/s | min per surface | set-up + compile (s) "
        "| TFLOP/s | % of matmul peak | peak memory (GiB) | max rel. Δloss vs naive fp32 | notes |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        tflops = flops_per_point / r.seconds / 1e12
        lines.append(
            f"| {r.method} | {r.precision} | {r.seconds:.4f} | {1 / r.seconds:.2f} "
            f"| {surface_minutes(r, total):.2f} | {r.setup:.1f} | {tflops:.3g} "
            f"| {100 * tflops / peaks[r.precision]:.1f} | {fmt(r.peak, '.2f')} "
            f"| {r.rel_diff:.1e} | {'; '.join(r.notes)} |"
        )
    return lines


def target_lines(rows: list[Row], total: int, train_minutes: float, device: torch.device):
    """One line per target, met or NOT met, naming the row it is judged on."""
    bf16 = min((r for r in rows if r.precision == "bf16"), key=lambda r: r.seconds)
    tf32 = min((r for r in rows if r.precision == "tf32"), key=lambda r: r.seconds)
    bf16_min, tf32_min = surface_minutes(bf16, total), surface_minutes(tf32, total)
    bf16_ok = bf16_min <= TARGET_BF16_MINUTES and bf16.rel_diff <= TARGET_LOSS_REL
    where = "one H100-class GPU" if device.type == "cuda" else f"one H100-class GPU, not {device}"
    return [
        f"- targets (for {where}):",
        f"  - bf16 surface <= {TARGET_BF16_MINUTES:g} min, loss within {TARGET_LOSS_REL:g} "
        f"relative of fp32: {'met' if bf16_ok else 'NOT met'} ({bf16_min:.2f} min, max rel. "
        f"Δloss {bf16.rel_diff:.1e}; `{bf16.method}`)",
        f"  - TF32 surface <= {TARGET_TF32_MINUTES:g} min: "
        f"{'met' if tf32_min <= TARGET_TF32_MINUTES else 'NOT met'} ({tf32_min:.2f} min; "
        f"`{tf32.method}`)",
        f"  - {PAPER_EPOCHS} training epochs <= {TARGET_TRAIN_MINUTES:g} min: "
        f"{'met' if train_minutes <= TARGET_TRAIN_MINUTES else 'NOT met'} "
        f"({train_minutes:.1f} min, fastest training row; accuracy not checked: random data)",
        "  - ResNet-56 top-5 eigenpairs over 10,000 images <= 30 s: see `hessian_gpu.md`",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--samples", type=int, default=50_000, help="images per point")
    parser.add_argument("--bn-fraction", type=float, default=0.1, help="share for UpBN")
    parser.add_argument("--bn-batch-size", type=int, default=500, help="every row's BN batches")
    parser.add_argument("--eval-batch-size", type=int, default=1000, help="engine rows")
    parser.add_argument("--grid", type=int, default=51, help="points per axis of the surface")
    parser.add_argument("--points", type=int, default=6, help="points timed per row")
    parser.add_argument("--warmup", type=int, default=1, help="points before timing")
    parser.add_argument("--no-compile", action="store_true", help="leave the compiled row out")
    parser.add_argument("--train-samples", type=int, default=50_000, help="images per epoch")
    parser.add_argument("--train-warmup-batches", type=int, default=20)
    parser.add_argument("--matmul-size", type=int, default=None, help="8192 on CUDA, 1024 else")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "grid_gpu.md")
    args = parser.parse_args(argv)
    if args.points < 1 or args.warmup < 0 or args.grid < 1:
        parser.error("--points and --grid must be at least 1, --warmup at least 0")
    if not 0 < args.bn_fraction <= 1:
        parser.error(f"--bn-fraction must be in (0, 1], got {args.bn_fraction}")

    device = torch.device(args.device)
    n_mm = args.matmul_size or (8192 if device.type == "cuda" else 1024)
    peaks = {p: matmul_tflops(device, p, n_mm) for p in ("fp32", "tf32", "bf16")}
    print("matmul peak (TFLOP/s): " + ", ".join(f"{k} {v:.3g}" for k, v in peaks.items()))
    torch.manual_seed(0)
    model = build_model({"arch": "resnet", "depth": args.depth}, 10, (3, 32, 32))
    dirs = [make_direction(DIRECTION | {"bias_bn": "zero", "seed": s}, model) for s in (1, 2)]
    model = model.to(device).eval()
    x, y = images(max(args.samples, args.train_samples), device)
    x_eval, y_eval = x[: args.samples], y[: args.samples]
    per_image = forward_flops(model)
    bn_samples = max(1, round(args.bn_fraction * args.samples))
    flops_per_point = per_image * (args.samples + bn_samples)
    total = args.grid**2

    rows, skipped = surface_rows(args, device, model, dirs, x_eval, y_eval)
    train, train_minutes = training_lines(args, device, x, y)

    info = machine_info()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"]
    n = sum(p.numel() for p in model.parameters())
    text = "\n".join(
        [
            f"# Device check: ResNet-{args.depth}, {args.grid}x{args.grid} surface with UpBN, "
            "and training epochs",
            "",
            f"- date: {info['date']}; torch {info['torch']}; device: {name}"
            + ("" if device.type == "cuda" else f" ({info['threads']} threads)"),
            f"- model: ResNet-{args.depth} (n = {n:,}), seeded initialization; data: "
            f"{args.samples:,} seeded random 3x32x32 images with uniform labels per point, on "
            f"the device; UpBN on the first {bn_samples:,} in batches of {args.bn_batch_size} "
            "(every row); two filter-normalized Gaussian directions (bias_bn zero, seeds 1, 2)",
            f"- surface {args.grid}x{args.grid} ({total:,} points) over [-1, 1]^2: {args.warmup} "
            f"warm-up point(s) at the centre (set-up, compile), then {len(rows[0].losses)} points "
            "spread over the grid timed; min per surface = s/point x points + set-up once",
            f"- FLOPs: {per_image / 1e6:.1f} MFLOP forward per image (FlopCounterMode) x "
            f"{args.samples + bn_samples:,} images = {flops_per_point / 1e12:.3g} TFLOP per point",
            f"- matmul peak here ({n_mm}^3 torch.mm, best of 3 x 10): fp32 {peaks['fp32']:.3g}, "
            f"tf32 {peaks['tf32']:.3g}, bf16 {peaks['bf16']:.3g} TFLOP/s; a row's % is of its "
            "precision's peak",
            "- evaluation rows: matmuls and cuDNN convolutions in IEEE fp32 unless the row's "
            "precision says otherwise; engine eval batches of "
            f"{args.eval_batch_size}; peak memory includes the images held on the device",
            *target_lines(rows, total, train_minutes, device),
            "",
            "## Surface",
            "",
            *surface_table(rows, total, flops_per_point, peaks),
            *([""] + [f"- {line}" for line in skipped] if skipped else []),
            "",
            f"## Training, papers' recipe (SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, "
            f"crop + flip on the device), one epoch over {min(args.train_samples, len(y)):,} "
            "images",
            "",
            "PyTorch's default float32 arithmetic (on CUDA, cuDNN convolutions may use TF32), as "
            f"`landscape.train` runs; {PAPER_EPOCHS} epochs extrapolated to 50,000 images, "
            "without the per-epoch evaluation.",
            "",
            f"| row | s/epoch | steps/s | {PAPER_EPOCHS} epochs (min) | peak memory (GiB) "
            "| mean training loss |",
            "|---|---|---|---|---|---|",
            *train,
            "",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
