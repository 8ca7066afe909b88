"""The plot set of a surface: every view draws every panel, NaN and inf masked and said."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.contour import ContourSet
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from landscape import store, surface_plots
from landscape.surface_plots import VIEWS, masked_grid, panels, plot_surface_set

X = np.linspace(-1.0, 1.0, 7)
Y = np.linspace(-0.5, 0.5, 5)


def write_surface(path: Path, grids: dict[str, np.ndarray]) -> Path:
    with store.create(path, kind="surface", spec={"bn_mode": "recompute"}) as w:
        w.scale("x", X)
        w.scale("y", Y)
        for name, values in grids.items():
            w.put(name, values, dims=("x", "y"))
    return path


def bad_grids() -> dict[str, np.ndarray]:
    """Train loss spanning decades with NaN, +inf and -inf; an all-NaN test loss; a constant
    train error; an ordinary test error."""
    bowl = np.add.outer(X**2, 4 * Y**2)
    train = 10 ** (3 * bowl)
    train[0, 0], train[3, 2], train[6, 4] = np.nan, np.inf, -np.inf
    return {
        "train/loss": train,
        "test/loss": np.full_like(bowl, np.nan),
        "train/error": np.full_like(bowl, 0.25),
        "test/error": bowl / bowl.max(),
    }


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot set makes, kept open instead of written."""
    made: dict[str, plt.Figure] = {}

    def keep(fig, out):
        made[Path(out).stem] = fig

    monkeypatch.setattr(surface_plots, "save_figure", keep)
    yield made
    for fig in made.values():
        plt.close(fig)


def test_masked_grid_counts_what_it_masks_against_a_loop():
    values = np.array([[1.0, np.nan, 0.0], [np.inf, -np.inf, 100.0], [-2.0, 10.0, 1e-3]])
    for log in (False, True):
        masked, counts = masked_grid(values, log)
        for (i, j), v in np.ndenumerate(values):
            drawable = np.isfinite(v) and (v > 0 or not log)
            assert bool(masked.mask[i, j]) == (not drawable)
            if drawable:
                assert masked[i, j] == (np.log10(v) if log else v)
        assert np.isfinite(masked.data).all()
        assert (counts["nan"], counts["posinf"], counts["neginf"]) == (1, 1, 1)
        assert counts["nonpositive"] == (2 if log else 0)


def _image_axes(fig: plt.Figure) -> list[plt.Axes]:
    """The panels (colorbars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _drawn_values(ax: plt.Axes) -> np.ndarray | None:
    """The values an axes draws from (None if it draws no grid), checked to be finite."""
    for artist in ax.collections:
        if isinstance(artist, QuadMesh):
            values = artist.get_array()
            assert np.ma.isMaskedArray(values)
            return values.compressed()
        if isinstance(artist, Poly3DCollection):
            values = np.asarray(artist.get_array())
            assert len(values) > 0 and len(artist.get_facecolor()) == len(values)
            return values[np.isfinite(values)]
        if isinstance(artist, ContourSet):
            assert any(len(path.vertices) for path in artist.get_paths())
            return np.asarray(artist.levels)
    return None


@pytest.mark.parametrize("view", VIEWS)
def test_no_view_is_blank_with_nan_and_inf_and_each_says_what_it_masked(tmp_path, figures, view):
    path = write_surface(tmp_path / "s.h5", bad_grids())
    items = plot_surface_set(path, {view: tmp_path / f"{view}.png"}, log="auto", title="t")
    fig = figures[view]
    axes = _image_axes(fig)
    assert len(axes) == 4
    by_title = {ax.get_title().split("\n")[0]: ax for ax in axes}
    assert set(by_title) == {"train loss (log10)", "test loss (log10)", "train error", "test error"}

    # The train loss spans decades: drawn as log10, its three non-finite points masked and said.
    train = by_title["train loss (log10)"]
    assert train.get_title().endswith("3 of 35 masked")
    values = _drawn_values(train)
    assert values is not None and values.size > 0 and np.isfinite(values).all()
    raw = bad_grids()["train/loss"]
    drawn = np.log10(raw[np.isfinite(raw)])
    assert values.min() >= drawn.min() - 1e-12 and values.max() <= drawn.max() + 1e-12
    # No finite test loss at all: the panel says so instead of drawing an empty frame.
    empty = by_title["test loss (log10)"]
    assert _drawn_values(empty) is None
    assert any("no finite value" in t.get_text() and "35 NaN" in t.get_text() for t in empty.texts)
    # A constant grid has no contours: it is drawn as cells, still one colour, never blank.
    constant = _drawn_values(by_title["train error"])
    assert constant is not None and np.allclose(constant, 0.25)
    assert _drawn_values(by_title["test error"]).size > 0
    if view in ("contour", "contourf"):
        crosses = [line for line in train.lines if line.get_label() == "masked"]
        assert len(crosses) == 1 and len(crosses[0].get_xdata()) == 3

    footer = " ".join(t.get_text() for t in fig.texts)
    assert "train loss (log10): 1 NaN (not computed), 1 +inf, 1 -inf" in footer
    assert "test loss (log10): 35 NaN (not computed)" in footer
    assert [p.masked for p in items] == [3, 35, 0, 0]


def test_log_scale_follows_the_setting_and_masks_nonpositive_losses(tmp_path):
    grids = {"test/loss": np.add.outer(X**2, Y**2) + 0.5}
    grids["test/loss"][2, 2] = 0.0
    art = store.open(write_surface(tmp_path / "s.h5", grids))
    (linear,) = panels(art, log=False)
    (log,) = panels(art, log=True)
    (auto,) = panels(art, log="auto")  # spans less than a factor 100 (with the 0 left out)
    assert not linear.log and linear.masked == 0 and not auto.log
    assert log.log and log.masked == 1 and log.nonpositive == 1
    positive = grids["test/loss"][grids["test/loss"] > 0]
    np.testing.assert_array_equal(log.values.compressed(), np.log10(positive))
    with pytest.raises(ValueError, match=r"surface_plots\.log"):
        panels(art, log="yes")


def test_the_plot_set_writes_one_png_per_view(tmp_path):
    path = write_surface(tmp_path / "s.h5", bad_grids())
    outs = {view: tmp_path / "set" / f"{view}.png" for view in VIEWS}
    plot_surface_set(path, outs)
    for out in outs.values():
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = plt.imread(out)
        assert image.std() > 0.05  # drawn, not a blank canvas
