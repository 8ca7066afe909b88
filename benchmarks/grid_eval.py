"""Benchmark: 2D loss-surface evaluation, per-point reference loop against the grid engine.

One run compares, on the same 21x21 grid (lambda in [-1, 1]^2), the same two filter-normalized
Gaussian directions (``bias_bn: zero``, seeds 1 and 2) and the same four fixed training batches
of 256 for BN recomputation ("UpBN"), evaluated on the digits test split (450 samples):

- ``naive``: what tomgoldstein/loss-landscape does per point: ``load_state_dict`` of
  ``theta + x d1 + y d2`` into one net, BN statistics reset and re-estimated in train mode with
  ``momentum=None`` over batches pulled from a ``DataLoader``, then an eval pass over a
  ``DataLoader`` of the test split. These are the reference values.
- ``naive, pre-batched``: the same loop fed with ready tensor batches (no ``DataLoader``), to
  separate the data-loading overhead from the per-point model overhead.
- ``engine``: :class:`landscape.grid.GridEvaluator` with each strategy and the first-layer
  linearity on or off; ``compile=True`` with compile time reported apart.
- evaluation options (issue 16), pointwise strategy: ``bn_recompute: functional`` (BN
  statistics through :func:`landscape.bn_recompute.stats_model`, eval pass with BN folded into
  the convolutions), ``channels_last``, ``bf16`` autocast, and compiled ``functional``; then the
  per-stage timings (BN statistics pass, eval pass) and the key rows of the 2x target against
  the pre-batched naive loop re-timed in alternation (the CPU is shared); then the
  convolutions alone (:func:`conv_floor`): the time per point no fp32 engine that computes them
  can go below, and so the largest speed-up over the pre-batched loop any engine could show.
- ``loss-landscapes`` (PyPI): ``planar_interpolation`` along the same plane, BN kept ("No UpBN":
  it has no BN recomputation), compared with the naive loop without UpBN at the coordinates it
  actually visits.

FLOPs are counted analytically for one sample's forward pass (see :func:`forward_flops`), times
the samples every point passes through the network (test split, plus the BN batches when the
model has BN and the row recomputes it), times the points. Engine rows use the same nominal count
even where they skip work (first-layer linearity), so their GFLOP/s is an effective figure.

Run ``python benchmarks/grid_eval.py`` (about 1.5 minutes on 2 cores) or ``--quick`` (7x7 grid).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import math
import pstats
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch._inductor.config
import torch.nn.functional as F
import yaml
from _machine import load_average, machine_info
from torch import Tensor, nn
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader, TensorDataset

from landscape import bn_recompute
from landscape.config import run_spec
from landscape.data import TensorSplit, load_data
from landscape.directions import make_direction
from landscape.grid import GridEvaluator
from landscape.train import load_model, train_model

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
BN_BATCHES = 4
BN_BATCH_SIZE = 256
TEST_BATCH_SIZE = 450
MODELS = ("mlp", "vgg_bn")
TARGET_SPEEDUP = {"mlp": 20.0, "vgg_bn": 2.0}
# issue 16: the BN CNN's engine >= 2x faster than the naive loop fed pre-batched tensors
TARGET_PREBATCHED = {"vgg_bn": 2.0}
TARGET_LOSS_DIFF = 1e-5
DIRECTION = {"kind": "noise", "distribution": "gaussian", "normalization": "filter"}
_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class Row:
    """One line of the table."""

    model: str
    method: str
    bn: str
    seconds: float
    points: int
    flops: float  # nominal FLOPs of the whole row
    loss_diff: float | None = None
    error_diff: float | None = None
    notes: list[str] = field(default_factory=list)
    engine: bool = False  # an eager or compiled GridEvaluator row
    reference: bool = False  # the naive row the speed-ups of its BN group are taken against


# ----------------------------------------------------------------------------- set-up


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 ``torch.mm`` throughput of an n x n by n x n product, best of ``repeats``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    torch.mm(a, b)  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def trained_model(config: dict, run: str, epochs: int, workdir: Path) -> tuple[nn.Module, dict]:
    """The run's model after ``epochs`` epochs of :func:`landscape.train.train_model`.

    Returns the model (eval mode) and its last history row (test loss and accuracy).
    """
    spec = run_spec(config, run)
    path = workdir / f"{run}_0.pt"
    train_model(path, spec, 0, device="cpu")
    if epochs > 0:
        first, path = path, workdir / f"{run}_{epochs}.pt"
        train_model(path, spec, epochs, previous=first, device="cpu")
    model, meta = load_model(path, "cpu")
    return model, meta["history"][-1]


def grid_coords(n: int) -> np.ndarray:
    """``(n*n, 2)`` coordinates, x major: point ``i*n + j`` is ``(xs[i], ys[j])``."""
    xs = np.linspace(-1.0, 1.0, n)
    return np.stack(np.meshgrid(xs, xs, indexing="ij"), axis=-1).reshape(-1, 2)


def forward_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of one sample, counted per leaf module from the shapes of a probe pass.

    Convention: ``2*in*out`` per Linear (bias not counted), ``2*Cin/groups*Cout*kh*kw*Hout*Wout``
    per Conv2d, 1 per output element of BatchNorm and ReLU, 1 per input element of a pooling
    layer; flatten, cross-entropy and BN's batch statistics in train mode are not counted.
    """
    total = 0

    def hook(mod: nn.Module, args: tuple, out: Tensor) -> None:
        nonlocal total
        x = args[0]
        if isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * mod.out_features
        elif isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            cin = mod.in_channels // mod.groups
            total += 2 * cin * mod.out_channels * kh * kw * out.shape[-2] * out.shape[-1]
        elif isinstance(mod, _BN | nn.ReLU):
            total += out[0].numel()
        elif isinstance(mod, nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d):
            total += x[0].numel()

    probe = copy.deepcopy(model).eval()
    hooks = [m.register_forward_hook(hook) for m in probe.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            probe(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return total


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


TIMING = {"budget_s": 3.0}  # --budget


def timed(
    fn: Callable[[], object], repeats: int = 5, budget_s: float | None = None
) -> tuple[float, object, list[str]]:
    """Best wall time of up to ``repeats`` calls, stopping once ``budget_s`` (default
    ``--budget``) is spent.

    Returns the best time, the last result and the distinct warnings raised (shortened).
    """
    budget_s = TIMING["budget_s"] if budget_s is None else budget_s
    times: list[float] = []
    result: object = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
            if sum(times) > budget_s:
                break
    notes = []
    for w in caught:
        text = str(w.message)
        match = re.search(r"batching rule for (\S+?)\.", text)
        text = f"vmap falls back to a loop for {match[1]}" if match else text.split(". ")[0][:80]
        if text not in notes:
            notes.append(text)
    return min(times), result, notes


# ----------------------------------------------------------------------------- methods


@torch.no_grad()
def naive_loop(
    model: nn.Module,
    dirs: Sequence[dict[str, Tensor]],
    coords: np.ndarray,
    train: TensorSplit,
    test: TensorSplit,
    *,
    recompute: bool = True,
    dataloader: bool = True,
) -> dict[str, np.ndarray]:
    """The per-point reference loop of tomgoldstein/loss-landscape.

    One private net; per point its state dict is rebuilt as ``theta + x d1 + y d2`` and loaded,
    BN statistics are reset and re-estimated (``momentum=None``, cumulative) over the first
    ``BN_BATCHES`` training batches when ``recompute``, and the test split is evaluated in eval
    mode. ``dataloader=False`` feeds pre-sliced tensor batches instead of ``DataLoader`` ones.
    """
    net = copy.deepcopy(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    bns = [m for m in net.modules() if isinstance(m, _BN)]
    if dataloader:
        train_batches = DataLoader(TensorDataset(train.x, train.y), batch_size=BN_BATCH_SIZE)
        test_batches = DataLoader(TensorDataset(test.x, test.y), batch_size=TEST_BATCH_SIZE)
    else:
        train_batches = list(islice(train.batches(BN_BATCH_SIZE), BN_BATCHES))
        test_batches = list(test.batches(TEST_BATCH_SIZE))
    loss = np.empty(len(coords))
    error = np.empty(len(coords))
    for p, (x, y) in enumerate(coords):
        state = dict(base)
        for name, d1 in dirs[0].items():
            state[name] = base[name] + float(x) * d1 + float(y) * dirs[1][name]
        net.load_state_dict(state)
        if recompute and bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
            net.train()
            for b, (xb, _) in enumerate(train_batches):
                if b == BN_BATCHES:
                    break
                net(xb)
        net.eval()
        total_loss, correct, total = 0.0, 0, 0
        for xb, yb in test_batches:
            out = net(xb)
            total_loss += F.cross_entropy(out, yb).item() * len(yb)
            correct += out.argmax(1).eq(yb).sum().item()
            total += len(yb)
        loss[p] = total_loss / total
        error[p] = 1.0 - correct / total
    return {"loss": loss, "error": error}


def engine(
    model: nn.Module,
    dirs: Sequence[dict[str, Tensor]],
    coords: np.ndarray,
    test: TensorSplit,
    bn_batches: list,
    bn_mode: str = "recompute",
    **options,
) -> dict[str, np.ndarray]:
    """A fresh :class:`GridEvaluator` (construction and preparation included) over the grid."""
    evaluator = GridEvaluator(
        model,
        dirs,
        bn_mode=bn_mode,
        bn_batches=bn_batches,
        batch_size=TEST_BATCH_SIZE,
        **options,
    )
    return evaluator(coords, {"test": test})["test"]


def loss_landscapes_plane(
    model: nn.Module, dirs: Sequence[dict[str, Tensor]], n: int, test: TensorSplit
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """``loss_landscapes.planar_interpolation`` on the plane of ``dirs``, BN kept.

    The start model is the corner ``theta - d1 - (1 + h) d2`` (``h`` the grid step) and the end
    models ``start + n h d_i``, so its steps are ``h d_i``. Its walk visits ``y = -1 + j h`` in
    even columns but ``y = -1 - h + j h`` in odd ones (the odd columns start one step lower), so
    the coordinates it visited are returned alongside its values.

    Returns:
        ``({"loss", "error"} as flat x-major arrays, visited coords (n*n, 2), seconds)``.
    """
    import loss_landscapes
    from loss_landscapes.metrics import Metric

    class LossError(Metric):
        def __init__(self, x: Tensor, y: Tensor):
            super().__init__()
            self.x, self.y = x, y

        def __call__(self, wrapper) -> tuple[float, float]:
            out = wrapper.forward(self.x)
            loss = F.cross_entropy(out, self.y).item()
            return loss, 1.0 - out.argmax(1).eq(self.y).float().mean().item()

    h = 2.0 / (n - 1)

    def shifted(cx: float, cy: float) -> nn.Module:
        net = copy.deepcopy(model).eval()
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name in dirs[0]:
                    p.add_(cx * dirs[0][name] + cy * dirs[1][name])
        return net

    start_model = shifted(-1.0, -1.0 - h)
    end_one = shifted(-1.0 + n * h, -1.0 - h)
    end_two = shifted(-1.0, -1.0 - h + n * h)
    metric = LossError(test.x, test.y)
    start = time.perf_counter()
    with torch.no_grad():
        values = loss_landscapes.planar_interpolation(
            start_model, end_one, end_two, metric, steps=n, deepcopy_model=False
        )
    seconds = time.perf_counter() - start
    values = np.asarray(values, dtype=np.float64)  # (n columns along d1, n along d2, 2)
    xs = -1.0 + h * np.arange(n)
    ys = -1.0 + h * np.arange(n)[None, :] - h * (np.arange(n)[:, None] % 2)
    visited = np.stack([np.repeat(xs[:, None], n, axis=1), ys], axis=-1).reshape(-1, 2)
    flat = values.reshape(n * n, 2)
    return {"loss": flat[:, 0], "error": flat[:, 1]}, visited, seconds


# ----------------------------------------------------------------------------- rows


def diff(values: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[float, float]:
    """Max absolute loss and error difference (NaN/inf compared as equal when both are)."""

    def one(a: np.ndarray, b: np.ndarray) -> float:
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        return float(np.max(np.where(same, 0.0, np.abs(a - b)), initial=0.0))

    return one(values["loss"], ref["loss"]), one(values["error"], ref["error"])


def compared(row: Row, values: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> Row:
    """Fills the row's differences to ``ref``; notes the relative one when over the target."""
    row.loss_diff, row.error_diff = diff(values, ref)
    if row.loss_diff > TARGET_LOSS_DIFF:
        rel = np.max(np.abs(values["loss"] - ref["loss"]) / np.abs(ref["loss"]))
        row.notes.append(f"max rel. loss diff {rel:.1e}")
    return row


def reference_row(
    name: str,
    method: str,
    bn: str,
    seconds: float,
    points: int,
    flops: float,
    values: dict[str, np.ndarray],
) -> Row:
    row = Row(name, method, bn, seconds, points, flops, 0.0, 0.0, reference=True)
    row.notes.append(f"reference; loss in [{values['loss'].min():.3g}, {values['loss'].max():.3g}]")
    return row


def benchmark_model(
    name: str, model: nn.Module, data, n: int
) -> tuple[list[Row], dict[str, Callable[[], object]]]:
    """Every row for one model; also returns the eager engine calls by label, for profiling."""
    coords = grid_coords(n)
    points = len(coords)
    dirs = [make_direction(DIRECTION | {"bias_bn": "zero", "seed": s}, model) for s in (1, 2)]
    bn_batches = list(islice(data.train.batches(BN_BATCH_SIZE), BN_BATCHES))
    bn = has_bn(model)
    per_sample = forward_flops(model, data.input_shape)
    samples = len(data.test) + (BN_BATCHES * BN_BATCH_SIZE if bn else 0)
    flops = float(per_sample * samples * points)
    flops_keep = float(per_sample * len(data.test) * points)
    upbn = "UpBN" if bn else "none (no BN)"
    print(f"[{name}] {per_sample / 1e3:.1f} kFLOP/sample, {samples} samples/point", flush=True)

    t, ref, _ = timed(lambda: naive_loop(model, dirs, coords, data.train, data.test))
    rows = [reference_row(name, "naive (DataLoader, load_state_dict)", upbn, t, points, flops, ref)]
    print(f"[{name}] naive: {t:.2f}s", flush=True)
    t, vals, _ = timed(
        lambda: naive_loop(model, dirs, coords, data.train, data.test, dataloader=False)
    )
    rows.append(
        compared(Row(name, "naive, pre-batched tensors", upbn, t, points, flops), vals, ref)
    )

    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    variants = [("auto", None), ("batched", True), ("batched", False)]
    variants += [("pointwise", True), ("pointwise", False)]
    calls: dict[str, Callable[[], object]] = {}
    for strategy, first in variants:

        def call(strategy=strategy, first=first):
            return engine(
                model, dirs, coords, data.test, bn_batches, strategy=strategy, first_layer=first
            )

        label = f"engine {strategy}, first_layer {'on' if first else 'off'}"
        if strategy == "auto":
            chosen = "pointwise, first_layer off" if has_conv else "batched, first_layer on"
            label = f"engine auto (= {chosen})"
        t, vals, notes = timed(call)
        row = compared(
            Row(name, label, upbn, t, points, flops, notes=notes, engine=True), vals, ref
        )
        rows.append(row)
        calls[label] = call
        print(f"[{name}] {label}: {t:.2f}s", flush=True)

    for first in (True, False):
        rows += compiled_rows(name, model, dirs, coords, data, bn_batches, ref, upbn, flops, first)
    if has_conv:
        rows += option_rows(name, model, dirs, coords, data, bn_batches, ref, upbn, flops)

    # No-UpBN block: the engine and loss-landscapes against the naive loop without recompute.
    if bn:
        t, keep_ref, _ = timed(
            lambda: naive_loop(model, dirs, coords, data.train, data.test, recompute=False)
        )
        rows.append(
            reference_row(name, "naive (DataLoader)", "No UpBN", t, points, flops_keep, keep_ref)
        )
        for first in (True, False):
            t, vals, notes = timed(
                lambda first=first: engine(
                    model, dirs, coords, data.test, [], bn_mode="keep", first_layer=first
                )
            )
            label = f"engine auto, first_layer {'on' if first else 'off'}"
            row = Row(name, label, "No UpBN", t, points, flops_keep, notes=notes, engine=True)
            rows.append(compared(row, vals, keep_ref))
    rows.append(loss_landscapes_row(name, model, dirs, n, data, flops_keep, bn))
    return rows, calls


OPTIONS = {  # the evaluation options' rows (pointwise, first layer off), by label
    "bn_recompute functional": {"bn_recompute": "functional"},
    "bn_recompute functional, channels_last": {"bn_recompute": "functional", "channels_last": True},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16, bn_recompute functional": {"precision": "bf16", "bn_recompute": "functional"},
}


def option_rows(name, model, dirs, coords, data, bn_batches, ref, bn, flops) -> list[Row]:
    """The evaluation options of issue 16, eager and compiled, against the naive reference."""
    rows = []
    for label, options in OPTIONS.items():
        t, vals, notes = timed(
            lambda options=options: engine(
                model,
                dirs,
                coords,
                data.test,
                bn_batches,
                strategy="pointwise",
                first_layer=False,
                **options,
            )
        )
        row = Row(name, f"engine pointwise, {label}", bn, t, len(coords), flops, notes=notes)
        row.engine = True
        rows.append(compared(row, vals, ref))
        print(f"[{name}] {row.method}: {t:.2f}s", flush=True)
    rows += compiled_rows(
        name,
        model,
        dirs,
        coords,
        data,
        bn_batches,
        ref,
        bn,
        flops,
        False,
        bn_recompute="functional",
    )
    return rows


def stage_times(model, dirs, data, bn_batches, repeats: int = 20) -> list[str]:
    """Per-point milliseconds of the BN statistics pass and of the evaluation pass, eager engine
    against ``bn_recompute: functional`` (eager and compiled), measured on theta."""
    lines = [
        "| engine | BN statistics pass (ms/point) | evaluation pass (ms/point) |",
        "|---|---|---|",
    ]
    coords = np.zeros((1, len(dirs)))
    for label, options in (
        ("eager (default)", {}),
        ("bn_recompute functional", {"bn_recompute": "functional"}),
        ("bn_recompute functional, compiled", {"bn_recompute": "functional", "compile": True}),
    ):
        ev = GridEvaluator(
            model,
            dirs,
            bn_mode="recompute",
            bn_batches=bn_batches,
            batch_size=TEST_BATCH_SIZE,
            strategy="pointwise",
            first_layer=False,
            **options,
        )
        try:
            ev(coords, {"test": data.test})  # prepare (and compile)
        except Exception as exc:  # compilation needs a working C++ toolchain
            lines.append(f"| {label} | not run: {type(exc).__name__} | |")
            continue

        def stats(ev=ev):
            if ev.stats_forward is not None:
                bn_recompute.reset(ev.work)
                for x in ev.bn_inputs:
                    ev.stats_forward(x)
                return
            for b, (x, _) in enumerate(bn_batches):
                for m in ev.bn:
                    m.train()
                    m.momentum = 1.0 / (b + 1)
                ev.work(x)
            ev.work.eval()

        def evaluation(ev=ev):
            ev._forward_eval(ev._input(data.test.x))

        with torch.no_grad():
            per = [best_ms(f, repeats) for f in (stats, evaluation)]
        lines.append(f"| {label} | {per[0]:.2f} | {per[1]:.2f} |")
    return lines


def key_rows_rerun(
    model, dirs, coords, data, bn_batches, rounds: int = 3
) -> tuple[list[str], float]:
    """The rows of the 2x target timed in alternation (the CPU is shared: a row timed alone can
    fall into a busy moment). Engines are built once (compile paid before); each round times one
    grid of every row. Returns a markdown table with the median speed-up against pre-batched,
    and the pre-batched loop's median milliseconds per point."""
    test = {"test": data.test}

    def built(**options):
        ev = GridEvaluator(
            model,
            dirs,
            bn_mode="recompute",
            bn_batches=bn_batches,
            batch_size=TEST_BATCH_SIZE,
            strategy="pointwise",
            first_layer=False,
            **options,
        )
        ev(coords[:2], test)
        return lambda: ev(coords, test)

    calls = {
        "naive, pre-batched tensors": lambda: naive_loop(
            model, dirs, coords, data.train, data.test, dataloader=False
        ),
        "engine auto (default)": built(),
        "engine bn_recompute functional": built(bn_recompute="functional"),
        "engine bn_recompute functional, channels_last": built(
            bn_recompute="functional", channels_last=True
        ),
    }
    try:
        calls["engine compiled, bn_recompute functional (steady)"] = built(
            bn_recompute="functional", compile=True
        )
    except Exception as exc:  # compilation needs a working C++ toolchain
        print(f"compiled re-run skipped: {exc}", flush=True)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - start)
    pre = np.array(times["naive, pre-batched tensors"])
    lines = ["| row | seconds per round | median speed-up vs pre-batched |", "|---|---|---|"]
    for label, ts in times.items():
        speed = float(np.median(pre / np.array(ts)))
        lines.append(f"| {label} | {', '.join(f'{t:.2f}' for t in ts)} | {speed:.2f}x |")
    return lines, 1e3 * float(np.median(pre)) / len(coords)


def conv_floor(model, data, bn_batches, repeats: int = 20) -> tuple[float, list[str]]:
    """Milliseconds per point of the convolutions alone (each conv of the model on its input
    for every BN batch and the test split, as captured by hooks): what an engine would take if
    every other operation were free. Returns it and a markdown table per convolution."""
    inputs: dict[str, list[Tensor]] = {}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=n: inputs.setdefault(n, []).append(args[0]))
        for n, m in convs.items()
    ]
    try:
        with torch.no_grad():
            for x, _ in bn_batches:
                model(x)
            model(data.test.x[:TEST_BATCH_SIZE])
    finally:
        for h in hooks:
            h.remove()
    lines = ["| convolution | input (one batch) | ms per point (all batches) |", "|---|---|---|"]
    total = 0.0
    with torch.no_grad():
        for n, xs in inputs.items():
            ms = best_ms(lambda xs=xs, conv=convs[n]: [conv(x) for x in xs], repeats)
            total += ms
            lines.append(f"| {n} | {tuple(xs[0].shape)} | {ms:.2f} |")
    return total, lines


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` timings of ``fn`` in milliseconds (after one warm-up call)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def compiled_rows(
    name, model, dirs, coords, data, bn_batches, ref, bn, flops, first, **options
) -> list[Row]:
    """``compile=True`` (pointwise): compile/warm-up on 2 points, then the grid twice.

    Returns a steady-state row (best of the two grids) and one that adds the compile time once.
    """
    points = len(coords)
    label = f"engine pointwise compiled, first_layer {'on' if first else 'off'}"
    if options:
        label = "engine pointwise compiled, " + ", ".join(f"{k} {v}" for k, v in options.items())
    torch._dynamo.reset()
    torch._inductor.config.force_disable_caches = True  # a cold compile, as on a fresh machine
    counters.clear()
    try:
        evaluator = GridEvaluator(
            model,
            dirs,
            bn_mode="recompute",
            bn_batches=bn_batches,
            batch_size=TEST_BATCH_SIZE,
            strategy="pointwise",
            first_layer=first,
            compile=True,
            **options,
        )
        start = time.perf_counter()
        evaluator(coords[:2], {"test": data.test})
        warm = time.perf_counter() - start
        steady, vals, _ = timed(lambda: evaluator(coords, {"test": data.test})["test"], 2, math.inf)
    except Exception as exc:  # compilation needs a working C++ toolchain
        why = f"not run: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        return [Row(name, label, bn, math.nan, points, flops, notes=[why])]
    breaks = sum(counters["graph_break"].values())
    compile_s = max(warm - 2 * steady / points, 0.0)
    rows = [
        Row(name, f"{label} (steady)", bn, steady, points, flops, engine=True),
        Row(name, f"{label} (incl. compile)", bn, steady + compile_s, points, flops, engine=True),
    ]
    rows[0].notes.append(f"compile/warm-up {compile_s:.1f}s excluded; {breaks} graph break(s)")
    rows[1].notes.append(f"compile amortized over one {points}-point grid")
    amortized = steady + compile_s / 10
    rows[1].notes.append(f"over 10 grids: {points / amortized:.0f} points/s")
    print(f"[{name}] {label}: compile {compile_s:.1f}s, steady {steady:.2f}s", flush=True)
    return [compared(row, vals, ref) for row in rows]


def loss_landscapes_row(name, model, dirs, n, data, flops, bn) -> Row:
    """The PyPI package's ``planar_interpolation``, or a row saying why it could not run."""
    label = "loss-landscapes planar_interpolation"
    bn_label = "No UpBN" if bn else "none (no BN)"
    points = n * n
    try:
        vals, visited, seconds = loss_landscapes_plane(model, dirs, n, data.test)
    except ImportError as exc:
        return Row(name, label, bn_label, math.nan, points, flops, notes=[f"not run: {exc}"])
    ref = naive_loop(model, dirs, visited, data.train, data.test, recompute=False)
    row = compared(Row(name, label, bn_label, seconds, points, flops), vals, ref)
    odd = np.abs(visited - grid_coords(n)).max() > 1e-9
    row.notes.append(
        "single run; no BN recompute; compared with the naive No-UpBN loop at the points it "
        "visits" + ("; its odd columns sit one step low in y (package bug)" if odd else "")
    )
    return row


# ----------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def group(row: Row) -> tuple[str, bool]:
    return row.model, row.bn == "No UpBN"


def table(rows: list[Row], matmul: float) -> str:
    """The markdown table; speed-up against the reference row of the same model and BN group."""
    head = (
        "| model | method | BN | time (s) | points/s | GFLOP/s | % of matmul | speed-up "
        "| max \\|Δloss\\| | max \\|Δerror\\| | notes |"
    )
    lines = [head, "|" + "---|" * 11]
    naive = {group(r): r.seconds for r in reversed(rows) if r.reference}
    for r in rows:
        gflops = r.flops / r.seconds / 1e9
        lines.append(
            f"| {r.model} | {r.method} | {r.bn} | {fmt(r.seconds, '.3f')} "
            f"| {fmt(r.points / r.seconds, '.0f')} | {fmt(gflops, '.2f')} "
            f"| {fmt(100 * gflops / matmul, '.1f')} "
            f"| {fmt(naive[group(r)] / r.seconds, '.1f')}x "
            f"| {fmt(r.loss_diff, '.1e')} | {fmt(r.error_diff, '.1e')} | {'; '.join(r.notes)} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """One line per target: ``engine auto`` and the best engine row per model, worst diff."""
    lines = []
    for model, need in TARGET_SPEEDUP.items():
        mine = [r for r in rows if r.model == model and r.bn != "No UpBN"]
        if not mine:
            continue
        ref = next(r for r in mine if r.reference).seconds
        auto = next(r for r in mine if r.method.startswith("engine auto"))
        best = min((r for r in mine if r.engine), key=lambda r: r.seconds)
        ok = "met" if ref / auto.seconds >= need else "NOT met"
        lines.append(
            f"- {model}: speed-up >= {need:g}x: {ok} by `{auto.method}` "
            f"({ref / auto.seconds:.1f}x); best engine row `{best.method}` "
            f"{ref / best.seconds:.1f}x"
        )
    for model, need in TARGET_PREBATCHED.items():
        mine = [r for r in rows if r.model == model and r.bn != "No UpBN"]
        if not mine:
            continue
        pre = next(r for r in mine if r.method == "naive, pre-batched tensors").seconds
        best = min(
            (r for r in mine if r.engine and "(steady)" not in r.method and "bf16" not in r.method),
            key=lambda r: r.seconds,
        )
        ok = "met" if pre / best.seconds >= need else "NOT met"
        lines.append(
            f"- {model}: >= {need:g}x faster than `naive, pre-batched tensors` (fp32, compile "
            f"paid within one grid): {ok}: best `{best.method}` {pre / best.seconds:.2f}x"
        )
    worst = max(
        (
            r.loss_diff
            for r in rows
            if r.engine and r.loss_diff is not None and "bf16" not in r.method
        ),
        default=0,
    )
    ok = "met" if worst <= TARGET_LOSS_DIFF else "NOT met"
    lines.append(
        f"- engine loss within {TARGET_LOSS_DIFF:g} of the naive loop (fp32 rows): {ok} "
        f"(worst {worst:.1e})"
    )
    return lines


def profile(call: Callable[[], object], top: int = 12) -> str:
    """cProfile of one call: the top functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    call()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    text = re.sub(r"\S*/(site-packages|lib/python3\.\d+)/", "", buf.getvalue())
    text = text.replace(str(ROOT) + "/", "")
    return text[text.find("ncalls") - 3 :].rstrip() if "ncalls" in text else text


def header(info: dict[str, str], matmul: float, n: int, epochs: int, models: dict) -> str:
    trained = ", ".join(
        f"{k} test loss {v['test_loss']:.3f}, acc {v['test_acc']:.3f}" for k, v in models.items()
    )
    return "\n".join(
        [
            "# Grid evaluation benchmark",
            "",
            f"- date: {info['date']}",
            f"- torch {info['torch']}, CPU: {info['cpu']}, threads: {info['threads']}",
            f"- run as: python benchmarks/grid_eval.py {info.get('argv', '')}".rstrip(),
            f"- load average at start / end (1, 5, 15 min; 2 cores shared with other jobs): "
            f"{info['load_start']} / {info['load_end']}",
            "- compiled rows: inductor's caches disabled (cold compile); compile/warm-up time = "
            "first 2-point call minus 2 steady points",
            f"- fp32 matmul (2048^3 torch.mm, best of 5): {matmul:.1f} GFLOP/s",
            f"- grid {n}x{n} ({n * n} points), lambda in [-1, 1]^2, two filter-normalized Gaussian "
            "directions (bias_bn zero, seeds 1, 2); UpBN over 4 fixed training batches of 256 "
            "(cumulative average); digits test split (450 samples, one batch)",
            f"- models of config.yaml trained {epochs} epochs with `train_model` (the runs' "
            f"30-epoch schedule): {trained}",
            "- FLOPs: analytic forward FLOPs per sample (2*in*out per Linear, "
            "2*Cin*Cout*kh*kw*Hout*Wout per Conv2d, 1 per element of BN/ReLU outputs and of "
            "pooling inputs) x (450 test samples + 1024 BN samples where the model has BN and the "
            "row recomputes it) x points; engine rows use this nominal count (effective GFLOP/s)",
            "- time: wall clock of the whole grid, evaluator construction included, best of up "
            f"to 5 runs within {TIMING['budget_s']:g} s; speed-up and differences against the "
            "`reference` naive row of the same model and BN mode",
            f"- targets: mlp >= {TARGET_SPEEDUP['mlp']:g}x and vgg_bn >= "
            f"{TARGET_SPEEDUP['vgg_bn']:g}x faster than the naive loop (`engine auto`); loss "
            f"identical to {TARGET_LOSS_DIFF:g}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="7x7 grid instead of 21x21")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "grid_eval.md"
    )
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (0: seeded init)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile sections")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="torch threads (busy CPU: 1 avoids spinning)"
    )
    parser.add_argument(
        "--budget", type=float, default=3.0, help="seconds of repeats per row (busy CPU: more)"
    )
    args = parser.parse_args(argv)
    TIMING["budget_s"] = args.budget

    torch.set_num_threads(args.threads)
    n = 7 if args.quick else 21
    info = machine_info()
    info["load_start"] = load_average()
    info["argv"] = " ".join(sys.argv[1:] if argv is None else argv)
    matmul = matmul_gflops()
    print(f"matmul: {matmul:.1f} GFLOP/s on {info['threads']} threads", flush=True)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rows: list[Row] = []
    trained: dict[str, dict] = {}
    calls: dict[str, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in MODELS:
            model, trained[run] = trained_model(config, run, args.epochs, Path(tmp))
            data = load_data(run_spec(config, run)["dataset"], "cpu")
            model_rows, model_calls = benchmark_model(run, model, data, n)
            rows += model_rows
            auto = next(label for label in model_calls if label.startswith("engine auto"))
            calls[f"{run}: {auto}"] = model_calls[auto]
            if run == "vgg_bn":
                bn_batches = list(islice(data.train.batches(BN_BATCH_SIZE), BN_BATCHES))
                spec = DIRECTION | {"bias_bn": "zero"}
                dirs = [make_direction(spec | {"seed": s}, model) for s in (1, 2)]
                stages = stage_times(model, dirs, data, bn_batches)
                rerun, naive_ms = key_rows_rerun(model, dirs, grid_coords(n), data, bn_batches)
                floor_ms, floor = conv_floor(model, data, bn_batches)
                floor.append(
                    f"\nSum {floor_ms:.2f} ms per point; the pre-batched naive loop took "
                    f"{naive_ms:.2f} ms per point (median of the re-run above): with these fp32 "
                    f"convolutions no engine, whatever else it fuses or removes, is more than "
                    f"{naive_ms / floor_ms:.2f}x faster than it."
                )

    info["load_end"] = load_average()
    sections = [
        header(info, matmul, n, args.epochs, trained),
        "## Results",
        table(rows, matmul),
        "## Targets",
        "\n".join(targets(rows)),
        "## Per-stage timings (vgg_bn, UpBN, per point, best of 20; eager engine)",
        "\n".join(stages),
        "## Key rows re-run (vgg_bn, UpBN): alternated, 3 rounds, seconds per grid",
        "\n".join(rerun),
        "## Convolutions alone (vgg_bn, UpBN; BN batches and test split, best of 20)",
        "\n".join(floor),
    ]
    if not args.no_profile:
        for label, call in calls.items():
            print(f"profiling {label} ...", flush=True)
            sections.append(f"## cProfile of `{label}`, top functions by own time")
            sections.append("```\n" + profile(call) + "\n```")
    text = "\n\n".join(sections)
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
