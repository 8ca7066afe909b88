"""``benchmarks/grid_gpu.py`` (issue 16's device check) at a tiny size on the CPU.

One run of the script writes its report; the tests read the tables back: every row present with
finite numbers, the engine's fp32 losses equal to the naive per-point loop's (an independent
reference) and bf16 within the target, and the FLOP count equal to an analytic one.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = [
    "--device", "cpu", "--depth", "8", "--samples", "128", "--grid", "3", "--points", "2",
    "--train-samples", "128", "--train-warmup-batches", "1", "--matmul-size", "128",
    "--no-compile",
]  # fmt: skip


@pytest.fixture(scope="module")
def grid_gpu():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        import grid_gpu

        yield grid_gpu
    sys.modules.pop("grid_gpu", None)
    sys.modules.pop("hessian_gpu", None)


@pytest.fixture(scope="module")
def report(grid_gpu, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("grid_gpu") / "grid_gpu.md"
    grid_gpu.main([*TINY, "--out", str(out)])
    return out.read_text()


def table(text: str, section: str) -> list[dict[str, str]]:
    """The markdown table under ``## {section}...`` as one dict per row, keyed by the header."""
    lines = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("|")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    return [
        dict(zip(head, (c.strip() for c in row.strip("|").split("|")), strict=True))
        for row in rows[2:]
    ]


def test_tiny_run_has_every_row_with_finite_numbers(report):
    surface = table(report, "Surface")
    assert [r["method"] for r in surface] == [
        "naive: load_state_dict, batch 128",
        "engine fp32",
        "engine fp32, bn_recompute functional",
        "engine tf32, channels_last, bn_recompute functional",
        "engine bf16, channels_last, bn_recompute functional",
    ]
    for r in surface:
        for key in ("s/point", "points/s", "min per surface", "TFLOP/s", "% of matmul peak"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0, (r["method"], key)
        assert float(r["set-up + compile (s)"]) >= 0
    # 9 points at s/point each plus the set-up once
    naive = surface[0]
    minutes = (9 * float(naive["s/point"]) + float(naive["set-up + compile (s)"])) / 60
    assert float(naive["min per surface"]) == pytest.approx(minutes, abs=0.01)
    training = table(report, "Training")
    assert [r["row"] for r in training] == ["training fp32", "training bf16, channels_last"]
    for r in training:
        seconds, minutes = float(r["s/epoch"]), float(r["200 epochs (min)"])
        assert seconds > 0
        # 200 epochs of 128 images extrapolated to 50,000 images
        assert minutes == pytest.approx(200 * seconds * 50_000 / 128 / 60, rel=1e-2)
        # one step from the seeded initialization on 10 random classes: about ln 10
        assert abs(float(r["mean training loss"]) - math.log(10)) < 0.5
    for target in ("bf16 surface", "TF32 surface", "200 training epochs"):
        line = next(line for line in report.splitlines() if line.startswith(f"  - {target}"))
        assert ": met (" in line or ": NOT met (" in line


def test_engine_losses_match_the_naive_loop(report):
    surface = {r["method"]: r for r in table(report, "Surface")}
    for method, row in surface.items():
        # on a CPU tf32 is fp32; bf16 autocast is held to the 1e-2
        bound = 1e-2 if row["precision"] == "bf16" else 1e-5
        assert float(row["max rel. Δloss vs naive fp32"]) <= bound, method
    assert float(surface["engine bf16, channels_last, bn_recompute functional"][
        "max rel. Δloss vs naive fp32"
    ]) > 0  # fmt: skip
    assert "9 conv-BN pairs folded" in surface["engine fp32, bn_recompute functional"]["notes"]


def test_forward_flops_equal_the_analytic_count(grid_gpu):
    from landscape.models import build_model

    model = build_model({"arch": "resnet", "depth": 8}, 10, (3, 32, 32))
    total = 0

    def hook(mod, args, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            cin = mod.in_channels // mod.groups
            total += 2 * cin * mod.out_channels * kh * kw * out.shape[-2] * out.shape[-1]
        elif isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * mod.out_features

    counted = grid_gpu.forward_flops(model)
    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    assert counted == total > 0
