"""PCA trajectory directions (kind ``pca``) and the projection of checkpoints onto their plane,
against numpy's SVD of the stacked flattened differences and least squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import store
from landscape.directions import make_direction, write_direction
from landscape.directions.pca import principal_components, project, trajectory_matrix
from landscape.models import build_model
from landscape.train import load_model, train_model
from landscape.trajectory import compute_trajectory
from landscape.trajectory_plots import plot_trajectory


def flat(tensors, names):
    return np.concatenate([tensors[n].detach().double().numpy().reshape(-1) for n in names])


@pytest.fixture
def walk():
    """A tiny MLP at theta and five checkpoints of a random walk that ends at theta."""
    torch.manual_seed(3)
    model = build_model({"arch": "mlp", "hidden": [6]}, 10, (1, 8, 8))
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(5)
    states, point = [], {n: t + 0.5 * torch.randn(t.shape, generator=g) for n, t in theta.items()}
    for _ in range(5):
        states.append({n: t.clone() for n, t in point.items()})
        point = {n: t + 0.2 * torch.randn(t.shape, generator=g) for n, t in point.items()}
    return model, theta, states


def numpy_pca(theta, states, names, keep=None):
    rows = [np.zeros(sum(theta[n].numel() for n in names))]
    rows += [flat(s, names) - flat(theta, names) for s in states]
    m = np.stack(rows)
    if keep is not None:
        m = m[:, keep]
    centred = m - m.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return vt, s**2 / (len(m) - 1), s**2 / np.sum(s**2)


def references(states):
    return {f"trajectory_{e}": s for e, s in zip((0, 3, 7, 12, 20), states, strict=True)}


@pytest.mark.parametrize("component", [1, 2])
def test_pca_direction_equals_numpy_svd(walk, component):
    model, theta, states = walk
    names = list(theta)
    attrs = {}
    d = make_direction(
        {"kind": "pca", "component": component}, model, references=references(states), attrs=attrs
    )
    vt, variance, ratio = numpy_pca(theta, states, names)
    ref = vt[component - 1]
    ref = ref if ref[np.abs(ref).argmax()] > 0 else -ref  # the sign rule: largest entry positive
    np.testing.assert_allclose(flat(d, names), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(attrs["explained_variance"], variance[:2], rtol=1e-10)
    np.testing.assert_allclose(attrs["explained_variance_ratio"], ratio[:2], rtol=1e-10)
    assert attrs["component"] == component and attrs["num_checkpoints"] == 6


def test_pca_bias_bn_zero_drops_1d_tensors_before_the_decomposition(walk):
    model, theta, states = walk
    names = list(theta)
    spec = {"kind": "pca", "bias_bn": "zero"}
    d1 = make_direction(spec, model, references=references(states))
    d2 = make_direction({**spec, "component": 2}, model, references=references(states))
    keep = np.concatenate([np.full(theta[n].numel(), theta[n].dim() > 1) for n in names]).nonzero()[
        0
    ]
    vt, _, _ = numpy_pca(theta, states, names, keep)
    v1, v2 = flat(d1, names), flat(d2, names)
    assert np.all(v1[np.setdiff1d(np.arange(len(v1)), keep)] == 0)
    assert abs(abs(v1[keep] @ vt[0]) - 1) < 1e-6 and abs(abs(v2[keep] @ vt[1]) - 1) < 1e-6
    # still unit vectors and orthogonal (zeroing after the decomposition would break both)
    assert abs(np.linalg.norm(v1) - 1) < 1e-6 and abs(v1 @ v2) < 1e-6


def test_pca_needs_three_checkpoints(walk):
    model, _, states = walk
    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        make_direction({"kind": "pca"}, model, references={"trajectory_0": states[0]})
    with pytest.raises(ValueError, match="trajectory"):
        make_direction({"kind": "pca"}, model)


def test_projection_is_least_squares_and_theta_is_the_origin(walk):
    _, theta, states = walk
    names = list(theta)
    g = torch.Generator().manual_seed(9)
    u = {n: torch.randn(t.shape, generator=g) for n, t in theta.items()}
    v = {n: torch.randn(t.shape, generator=g) for n, t in theta.items()}  # not orthogonal to u
    coords, distance, residual = project(theta, [*states, theta], [u, v])
    a = np.stack([flat(u, names), flat(v, names)], 1)
    for i, s in enumerate(states):
        diff = flat(s, names) - flat(theta, names)
        ref = np.linalg.lstsq(a, diff, rcond=None)[0]
        np.testing.assert_allclose(coords[i].numpy(), ref, rtol=1e-9, atol=1e-12)
        assert abs(float(distance[i]) - np.linalg.norm(diff)) < 1e-9
        assert abs(float(residual[i]) - np.linalg.norm(a @ ref - diff)) < 1e-9
    assert coords[-1].tolist() == [0.0, 0.0] and float(distance[-1]) == 0.0
    # points in the plane come back exactly, in lambda units of u and v
    inside = {n: t + 0.3 * u[n] - 1.7 * v[n] for n, t in theta.items()}
    c, _, r = project(theta, [inside], [u, v])
    np.testing.assert_allclose(c[0].numpy(), [0.3, -1.7], rtol=0, atol=1e-6)
    assert float(r[0]) < 1e-5


def test_trajectory_matrix_rows(walk):
    _, theta, states = walk
    names = list(theta)
    m = trajectory_matrix(theta, states)
    assert m.dtype == torch.float64 and m.shape == (6, sum(t.numel() for t in theta.values()))
    assert torch.all(m[0] == 0)
    np.testing.assert_allclose(m[2].numpy(), flat(states[1], names) - flat(theta, names))
    with pytest.raises(ValueError, match="fewer than 2"):
        principal_components(torch.zeros(4, 7))


def test_trajectory_of_trained_checkpoints(tmp_path):
    """Checkpoints of a real run: direction files, the projection artifact and its figure."""
    spec = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": {"source": "digits"},
        "model_name": "mlp",
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 3, "seed": 0, "lr": 0.1, "batch_size": 128},
    }
    paths = {e: tmp_path / f"e{e}.pt" for e in range(4)}
    for e, path in paths.items():
        train_model(path, spec, e, previous=paths.get(e - 1), device="cpu")
    refs = {f"trajectory_{e}": paths[e] for e in range(3)}
    for c in (1, 2):
        write_direction(
            paths[3],
            tmp_path / f"pc{c}.h5",
            {"kind": "pca", "component": c},
            device="cpu",
            references=refs,
        )
    pc1 = store.open(tmp_path / "pc1.h5")
    assert len(pc1.attrs["explained_variance_ratio"]) == 2
    assert sorted(pc1.inputs) == ["checkpoint", "trajectory_0", "trajectory_1", "trajectory_2"]
    dirs = [tmp_path / "pc1.h5", tmp_path / "pc2.h5"]
    out = tmp_path / "traj.h5"
    compute_trajectory(paths[3], dirs, paths, out, {"epochs": [0, 1, 2, 3]})
    art = store.open(out)
    assert art["epoch"].tolist() == [0, 1, 2, 3] and art.dims["coordinates/x"] == ("epoch",)
    assert art["coordinates/x"][-1] == 0.0 and art["coordinates/y"][-1] == 0.0
    # the coordinates reproduce the centred PCA scores (unit, orthogonal directions)
    model, _ = load_model(paths[3])
    theta = {n: p.detach() for n, p in model.named_parameters()}
    names = list(theta)
    states = [store.read_checkpoint(paths[e])["model"] for e in range(3)]
    vt, _, ratio = numpy_pca(theta, states, names)
    diffs = np.stack([flat(s, names) - flat(theta, names) for s in states])
    np.testing.assert_allclose(np.abs(art["coordinates/x"][:3]), np.abs(diffs @ vt[0]), atol=1e-5)
    np.testing.assert_allclose(np.abs(art["coordinates/y"][:3]), np.abs(diffs @ vt[1]), atol=1e-5)
    np.testing.assert_allclose(art.attrs["explained_variance_ratio"], ratio[:2], rtol=1e-6)
    assert abs(art.attrs["plane_fraction"] - ratio[:2].sum()) < 1e-9
    # 4 points span at most 3 dimensions: the part off the plane is the third component's
    assert np.all(art["residual"] <= art["distance"] + 1e-9)
    surface = tmp_path / "surface.h5"
    with store.create(surface, kind="surface", spec={}) as w:
        w.scale("x", np.linspace(-1, 1, 5))
        w.scale("y", np.linspace(-1, 1, 4))
        loss = np.outer(np.linspace(1, 2, 5), np.linspace(1, 3, 4))
        loss[0, 0] = np.nan
        w.put("test/loss", loss, dims=("x", "y"))
    plot_trajectory(out, surface, tmp_path / "traj.png")
    assert (tmp_path / "traj.png").stat().st_size > 0


def _config(**extra):
    train = {"epochs": 30, "checkpoints": [0, 10, 30]}
    config = {
        "runs": {"r": {"dataset": "d", "model": "m", "train": train}},
        "directions": {"p1": {"kind": "pca", "component": 1}, "p2": {"kind": "pca"}},
        "surfaces": {"s": {"directions": ["p1", "p2"], "runs": ["r"], "epochs": "final"}},
        "eigenmaps": {},
        "group_curvature": {"runs": [], "epochs": "final"},
        "weight_stats": {"runs": []},
    }
    config.update(extra)
    return config


def test_config_checks_and_references_of_pca_directions():
    from landscape.analysis_config import check_analysis, pca_surfaces, trajectory_epochs
    from landscape.config import ConfigError, direction_references, direction_spec

    config = _config()
    check_analysis(config)
    assert pca_surfaces(config) == ["s"]
    assert trajectory_epochs(config, "s", "r", 30) == [0, 10, 30]
    assert direction_references(config, "p1", "r", 30) == {
        "trajectory_0": ("r", 0),
        "trajectory_10": ("r", 10),
    }
    assert direction_spec(config, "p1") == {
        "kind": "pca",
        "component": 1,
        "normalization": "raw",
        "bias_bn": "raw",
    }
    config["directions"]["p2"]["checkpoints"] = [0, 5, 30]
    with pytest.raises(ConfigError, match=r"directions\.p2\.checkpoints: run 'r' .* \[5\]"):
        check_analysis(config)
    config["directions"]["p2"]["checkpoints"] = [0, 30]
    with pytest.raises(ConfigError, match="at least 3"):
        check_analysis(config)
    bad = _config(weight_stats={"runs": ["nope"]})
    with pytest.raises(ConfigError, match=r"weight_stats\.runs: 'nope'"):
        check_analysis(bad)
