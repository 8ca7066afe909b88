"""The figures of V5 (angles), V13 (density, loss change) and VT (curve taxonomy): the numbers
drawn are the artifact's, the reference lines sit where the paper puts them, axes are labelled."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from landscape import plots, store
from landscape.curve_table import write_curve_table
from landscape.evaluate import write_analysis

NAMES = ["g_batch[0]", "g_batch[1]", "theta_f - theta_cur"]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions make, kept open instead of written."""
    made = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out: made.append(fig))
    yield made
    for fig in made:
        plots.plt.close(fig)


def write_angles(path, gaussian, between):
    with store.create(path, kind="angles", spec={}, attrs={"descent_names": NAMES}) as w:
        w.scale("direction", np.arange(gaussian.shape[0]))
        w.scale("descent", np.arange(len(NAMES)))
        w.put("gaussian", gaussian, dims=("direction", "descent"))
        w.put("between", between, dims=("descent", "descent"))


@pytest.fixture
def angles(tmp_path):
    rng = np.random.default_rng(0)
    gaussian = 90.0 + 0.3 * rng.standard_normal((40, 3))
    between = np.array([[0.0, 60.0, 81.5], [60.0, 0.0, 86.25], [81.5, 86.25, 0.0]])
    write_angles(tmp_path / "angles.h5", gaussian, between)
    return tmp_path / "angles.h5", gaussian, between


def bar_heights(container):
    return np.array([bar.get_height() for bar in container])


def assert_labelled(ax):
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_angle_histograms_are_the_artifacts_angles(angles, figures):
    path, gaussian, _ = angles
    plots.plot_angles(path, "angles.png")
    hist_ax, dot_ax = figures[0].axes
    labels = [t.get_text() for t in hist_ax.get_legend().get_texts()]
    assert len(labels) == 2 and "g_" in labels[0] and "theta_f" in labels[1]
    assert "2x40" in labels[0] and "1x40" in labels[1]  # both batches pooled, one target
    bins = np.histogram_bin_edges(gaussian, bins=30)
    for container, values in zip(
        hist_ax.containers, (gaussian[:, :2], gaussian[:, 2]), strict=True
    ):
        expected = np.histogram(values.ravel(), bins=bins)[0] / values.size
        np.testing.assert_allclose(bar_heights(container), expected, atol=1e-12)
        assert bar_heights(container).sum() == pytest.approx(1.0)
        np.testing.assert_allclose([b.get_x() for b in container], bins[:-1])
    assert any(np.allclose(line.get_xdata(), 90.0) for line in hist_ax.lines)
    dots = [line.get_xdata()[0] for line in dot_ax.lines if line.get_marker() == "o"]
    assert dots == [81.5, 86.25]  # each batch gradient against theta_f - theta_cur
    assert [t.get_text() for t in dot_ax.get_yticklabels()] == NAMES[:2]
    assert_labelled(hist_ax)
    assert dot_ax.get_xlabel() and dot_ax.get_title()


def test_angles_at_the_final_checkpoint_say_undefined(tmp_path, figures):
    """theta_f - theta_cur = 0 gives NaN angles: drawn as text, the batch gradients still shown."""
    gaussian = np.full((5, 3), 90.0)
    gaussian[:, :2] += np.linspace(-0.2, 0.2, 5)[:, None]
    gaussian[:, 2] = np.nan
    between = np.full((3, 3), np.nan)
    write_angles(tmp_path / "angles.h5", gaussian, between)
    plots.plot_angles(tmp_path / "angles.h5", "angles.png")
    hist_ax, dot_ax = figures[0].axes
    assert len(hist_ax.containers) == 1
    assert bar_heights(hist_ax.containers[0]).sum() == pytest.approx(1.0)
    legend = [t.get_text() for t in hist_ax.get_legend().get_texts()]
    assert "undefined" in legend[1]
    assert all("undefined" in t.get_text() for t in dot_ax.texts) and len(dot_ax.texts) == 2


def write_loss_change(tmp_path, trace_value=7.5, recorded_trace=7.5, sigma=0.5):
    rng = np.random.default_rng(1)
    lambdas = np.array([0.001, 0.01])
    actual = 1e-4 * rng.standard_normal((30, 2)) + lambdas**2
    soa = actual + 1e-6 * rng.standard_normal((30, 2))
    trace = tmp_path / "trace.h5"
    with store.create(trace, kind="trace", spec={}, attrs={"trace": trace_value, "stderr": 0.0}):
        pass
    spec = {"loss_change": {"lambdas": lambdas.tolist(), "sigma": sigma}}
    attrs = {"trace": recorded_trace, "trace_stderr": 0.0, "loss0": 0.25}
    path = tmp_path / "loss_change.h5"
    with store.create(path, kind="loss_change", spec=spec, attrs=attrs) as w:
        w.scale("lambda", lambdas)
        w.scale("sample", np.arange(30))
        w.put("actual", actual, dims=("sample", "lambda"))
        w.put("soa", soa, dims=("sample", "lambda"))
    return path, trace, lambdas, actual, soa


def test_loss_change_line_is_half_lambda2_sigma2_trace(tmp_path, figures):
    """The red line sits at 0.5 lambda^2 sigma^2 tr(H) with tr(H) from the trace file."""
    path, trace, lambdas, actual, soa = write_loss_change(tmp_path, recorded_trace=1.0)
    plots.plot_loss_change(path, "loss_change.png", trace=trace)
    axes = figures[0].axes
    assert len(axes) == len(lambdas)
    for i, (ax, lam) in enumerate(zip(axes, lambdas, strict=True)):
        predicted = 0.5 * lam**2 * 0.5**2 * 7.5
        red = [line for line in ax.lines if line.get_color() == "tab:red"]
        assert len(red) == 1 and red[0].get_xdata()[0] == pytest.approx(predicted, rel=1e-12)
        actual_bars, soa_bars = ax.containers
        drawn = np.concatenate([actual[:, i], soa[:, i], [predicted, 0.0]])
        bins = np.histogram_bin_edges(drawn, bins=25)  # common bins spanning what is drawn
        np.testing.assert_allclose([b.get_x() for b in actual_bars], bins[:-1], rtol=1e-12)
        np.testing.assert_array_equal(bar_heights(actual_bars), np.histogram(actual[:, i], bins)[0])
        np.testing.assert_array_equal(bar_heights(soa_bars), np.histogram(soa[:, i], bins)[0])
        assert bar_heights(actual_bars).sum() == len(actual) == bar_heights(soa_bars).sum()
        assert f"{lam:g}" in ax.get_title()
        assert_labelled(ax)
    assert "tr(H) = 7.5" in figures[0].get_suptitle()
    np.testing.assert_allclose(
        plots.predicted_loss_change(path), 0.5 * lambdas**2 * 0.25 * 1.0, rtol=1e-12
    )


def test_loss_change_png_is_not_blank(tmp_path):
    path, trace, *_ = write_loss_change(tmp_path)
    plots.plot_loss_change(path, tmp_path / "loss_change.png", trace=trace)
    image = imread(tmp_path / "loss_change.png")
    assert image.shape[1] > image.shape[0] > 300 and image[..., :3].std() > 0.05


def write_density(tmp_path):
    grid = np.linspace(-0.6, 2.1, 200)
    density = np.exp(-((grid - 0.0) ** 2) / 0.001) + 1e-3 * np.exp(-((grid - 2.0) ** 2) / 0.001)
    density_path, spectrum_path = tmp_path / "density.h5", tmp_path / "spectrum.h5"
    with store.create(density_path, kind="density", spec={}) as w:
        w.scale("eigenvalue", grid)
        w.put("density", density / density.sum(), dims=("eigenvalue",))
    with store.create(spectrum_path, kind="spectrum", spec={}) as w:
        w.put("LA/eigenvalues", np.array([2.0, 1.5]))
        w.put("SA/eigenvalues", np.array([-0.5, -0.25]))
    return density_path, spectrum_path, density / density.sum()


def test_density_marks_the_smallest_eigenvalue(tmp_path, figures):
    density_path, spectrum_path, density = write_density(tmp_path)
    plots.plot_density(density_path, "density.png", spectrum=spectrum_path)
    ax = figures[0].axes[0]
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {"smallest eigenvalue -0.5", "largest eigenvalue 2"}
    named = {line.get_label(): line.get_xdata()[0] for line in ax.lines}
    assert named["smallest eigenvalue -0.5"] == -0.5
    low, high = ax.get_ylim()
    assert low == pytest.approx(1e-8 * density.max()) and high == pytest.approx(10 * density.max())


def write_curve(path, metrics):
    lam = np.linspace(-1.0, 1.0, 21)
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.create(path, kind="curve", spec={}, attrs={"run": "r", "epoch": 3}) as w:
        w.scale("lambda", lam)
        for name, values in metrics.items():
            w.put(name, values(lam), dims=("lambda",))
        write_analysis(w, lam, {name: values(lam) for name, values in metrics.items()})


def test_curve_table_figure_shows_every_cell_of_the_csv(tmp_path, figures):
    base = tmp_path / "digits" / "mlp" / "r" / "curves" / "epoch3"
    write_curve(
        base / "gauss.h5", {"test/loss": lambda x: x**2, "test/error": lambda x: (x**2 - 0.25) ** 2}
    )
    write_curve(base / "to_final.h5", {"test/loss": lambda x: x**2 + 0.4 * x})
    table = write_curve_table([base / "gauss.h5", base / "to_final.h5"], tmp_path / "t.csv")
    plots.plot_curve_table(tmp_path / "t.csv", "table.png")
    ax = figures[0].axes[0]
    cells = ax.tables[0].get_celld()
    header = [cells[0, c].get_text().get_text() for c in range(3)]
    assert header == ["model / curve / epoch", "test/loss", "test/error"]
    shown = {
        (cells[r, 0].get_text().get_text(), header[c]): cells[r, c].get_text().get_text()
        for r in (1, 2)
        for c in (1, 2)
    }
    for row in table.itertuples():
        cell = shown[(f"mlp (r) / {row.curve} / E3", row.metric)]
        assert cell == f"{row.type} ({row.n_stationary})"
    assert shown[("mlp (r) / gauss / E3", "test/loss")] == "v-basin (1)"
    assert shown[("mlp (r) / gauss / E3", "test/error")] == "w-peak (3)"
    assert shown[("mlp (r) / to_final / E3", "test/loss")] == "v-side (1)"
    assert shown[("mlp (r) / to_final / E3", "test/error")] == ""  # that curve has no error
    counts = " ".join(ax.get_title().split())  # wrapped to the figure's width
    assert "v-basin: 1, v-side: 1, w-basin: 0, w-peak: 1, vvv-basin: 0, other: 0" in counts
    assert to_rgb(cells[1, 1].get_facecolor()) == pytest.approx(
        to_rgb(plots.TYPE_COLORS["v-basin"])
    )


def test_empty_curve_table_still_draws(tmp_path, figures):
    write_curve_table([], tmp_path / "t.csv")
    plots.plot_curve_table(tmp_path / "t.csv", "table.png")
    assert [t.get_text() for t in figures[0].axes[0].texts] == ["no curves"]


@pytest.mark.parametrize("height, scale", [(1e4, "log"), (2.0, "linear")])
def test_curve_loss_axis_is_logarithmic_only_when_the_loss_spans_decades(
    tmp_path, figures, height, scale
):
    def loss(lam):
        return 0.1 + height * lam**2

    metrics = {
        f"{s}/{m}": (loss if m == "loss" else lambda lam: np.abs(lam) / 2)
        for s in ("train", "test")
        for m in ("loss", "error")
    }
    write_curve(tmp_path / "c.h5", metrics)
    plots.plot_curve(tmp_path / "c.h5", tmp_path / "c.png")
    ax_loss = figures[0].axes[0]
    assert ax_loss.get_yscale() == scale
    assert ax_loss.get_ylabel() == ("loss (log scale)" if scale == "log" else "loss")
    np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), loss(np.linspace(-1, 1, 21)))
