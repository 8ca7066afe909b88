"""Multi-panel paper figures (the ``figures`` block): which curves each panel draws, the config
errors for a figure that draws something no block computes, and what a drawn panel shows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landscape import panels, store
from landscape.config import ConfigError
from landscape.figures import check_figures, figure_members, figure_panels


def config(**figure):
    runs = {
        "a": {"train": {"epochs": 30, "checkpoints": [0, 10, 30]}},
        "b": {"train": {"epochs": 5, "checkpoints": [0, 5]}},
    }
    curves = {
        "g": {"runs": "all", "epochs": "final"},
        "early": {"runs": ["a"], "epochs": [0, 10]},
    }
    block = {"id": "V2", "runs": ["a"], "epochs": "final", **figure}
    return {
        "runs": runs,
        "curves": curves,
        "surfaces": {"s": {"runs": ["a"], "epochs": [0]}},
        "figures": {"f": block},
    }


def test_lines_default_to_the_figures_run_and_epoch_and_name_what_differs():
    cfg = config(
        panels={
            "p": [
                "g",
                {"curve": "early", "epoch": 10},
                {"curve": "g", "run": "b"},
                {"curve": "g", "label": "mine", "x_scale": 0.1},
            ]
        }
    )
    (panel,) = figure_panels(cfg, "f", "a", 30)
    runs_epochs = [(line["run"], line["epoch"]) for line in panel["lines"]]
    assert runs_epochs == [("a", 30), ("a", 10), ("b", 5), ("a", 30)]  # b's final epoch
    assert [line["label"] for line in panel["lines"]] == [
        "g",
        "early (epoch 10)",
        "g (b, epoch 5)",
        "mine",
    ]
    assert [line["x_scale"] for line in panel["lines"]] == [1.0, 1.0, 1.0, 0.1]
    assert figure_members([panel])[2] == ("curves", "g", "b", 5)


def test_a_surface_panel_is_its_surface_at_the_figures_checkpoint():
    cfg = config(panels={"x": {"surface": "s"}}, epochs=[0])
    assert figure_members(figure_panels(cfg, "f", "a", 0)) == [("surfaces", "s", "a", 0)]
    check_figures(cfg)


@pytest.mark.parametrize(
    ("panels_", "message"),
    [
        ({"p": ["nope"]}, "figures.f.panels.p: 'nope' is not a key of curves"),
        ({"p": [{"curve": "g", "run": "zz"}]}, "figures.f.panels.p: run 'zz' is not a key of runs"),
        ({"p": [{"curve": "early", "epoch": 30}]}, "curves.early is not evaluated at epoch 30"),
        ({"p": ["early"]}, "curves.early is not evaluated at epoch 30 of run 'a'"),
        (
            {"p": [{"curve": "early", "run": "b", "epoch": 0}]},
            "curves.early is not evaluated on run 'b'",
        ),
        ({"p": {"surface": "s"}}, "surfaces.s is not evaluated at epoch 30"),
    ],
)
def test_a_figure_drawing_what_no_block_computes_is_refused(panels_, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        check_figures(config(panels=panels_))


def write_curve(path, lam, loss, num_classes=10, bn_mode="recompute"):
    with store.create(
        path,
        kind="curve",
        spec={"bn_mode": bn_mode},
        attrs={"num_classes": num_classes, "batchnorm": True},
    ) as w:
        w.scale("lambda", lam)
        w.put("test/loss", loss, dims=("lambda",))
        w.put("test/error", np.clip(loss / 10, 0, 1), dims=("lambda",))


def write_surface(path, x, y, loss):
    with store.create(
        path, kind="surface", spec={"bn_mode": "keep"}, attrs={"batchnorm": False}
    ) as w:
        w.scale("x", x)
        w.scale("y", y)
        w.put("test/loss", loss, dims=("x", "y"))


@pytest.fixture
def drawn(monkeypatch):
    made = []
    monkeypatch.setattr(panels, "save_figure", lambda fig, out: made.append(fig))
    yield made
    for fig in made:
        panels.plt.close(fig)


def test_curve_panels_draw_each_curve_with_its_stationary_points_and_the_reference_lines(
    tmp_path, drawn
):
    lam = np.linspace(-1, 1, 41)
    v = 2 * lam**2 + 0.1  # reaches log(C) / 2: the chance line is drawn
    w = (lam**2 - 0.25) ** 2 + 0.1  # two minima and a peak at 0: three stationary points
    write_curve(tmp_path / "v.h5", lam, v)
    write_curve(tmp_path / "w.h5", lam, w)
    cfg = config(panels={"both": ["g", {"curve": "g", "label": "scaled", "x_scale": 0.1}]})
    spec = figure_panels(cfg, "f", "a", 30)
    panels.plot_figure(
        spec, [tmp_path / "v.h5", tmp_path / "w.h5"], "f.png", title="t", marks=[1.0]
    )
    (ax,) = drawn[0].axes
    v_line, w_line = ax.lines[:2]
    np.testing.assert_allclose(v_line.get_xdata(), lam)
    np.testing.assert_allclose(w_line.get_xdata(), lam * 0.1)
    np.testing.assert_allclose(w_line.get_ydata(), w)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["g (1)", "scaled (3)", "log(C)"]
    horizontal = [line.get_ydata()[0] for line in ax.lines if np.ptp(line.get_ydata()) == 0]
    assert horizontal == pytest.approx([math.log(10)])
    vertical = {(line.get_xdata()[0], line.get_color()) for line in ax.lines[3:]}
    assert vertical == {(0.0, "k"), (1.0, "r")}
    assert "UpBN" in ax.get_title() and ax.get_title().startswith("both")
    assert ax.get_yscale() == "linear" and ax.get_xlabel() == "lambda"


def test_a_loss_spanning_decades_is_drawn_on_a_log_axis_and_surfaces_as_contours(tmp_path, drawn):
    lam = np.linspace(-1, 1, 21)
    write_curve(tmp_path / "c.h5", lam, np.exp(10 * np.abs(lam)))
    x = y = np.linspace(-1, 1, 5)
    loss = np.add.outer(x**2, y**2) + 0.01
    write_surface(tmp_path / "s.h5", x, y, loss)
    cfg = config(panels={"curve": ["g"], "surf": {"surface": "s"}}, epochs=[0])
    cfg["curves"]["g"]["epochs"] = [0]
    spec = figure_panels(cfg, "f", "a", 0)
    panels.plot_figure(spec, [tmp_path / "c.h5", tmp_path / "s.h5"], "f.png", title="t")
    curve_ax, surface_ax = drawn[0].axes[:2]
    assert curve_ax.get_yscale() == "log" and "log scale" in curve_ax.get_ylabel()
    assert "no BN layers" in surface_ax.get_title()
    assert surface_ax.collections  # filled contours
    with pytest.raises(ValueError, match="2 curves and surfaces in the panels, 1 files"):
        panels.plot_figure(spec, [tmp_path / "c.h5"], "f.png", title="t")


def test_a_small_loss_change_is_not_flattened_by_the_chance_line(tmp_path, drawn):
    """V6 at s = 0.01: the loss moves by 1e-3 near 0.1; log(C) = 2.3 would squash it flat."""
    lam = np.linspace(-0.01, 0.01, 21)
    write_curve(tmp_path / "c.h5", lam, 0.1 - 0.1 * lam)
    spec = figure_panels(config(panels={"p": ["g"]}), "f", "a", 30)
    panels.plot_figure(spec, [tmp_path / "c.h5"], "f.png", title="t")
    (ax,) = drawn[0].axes
    low, high = ax.get_ylim()
    assert high - low < 0.01 and low < 0.099 and high > 0.101
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["g (0)"]
