"""Weight statistics of a run's checkpoints against direct torch computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import store
from landscape.train import train_model
from landscape.weight_stats import compute_weight_stats, histogram_edges, weight_statistics
from landscape.weight_stats_plots import plot_weight_stats


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    spec = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": {"source": "digits"},
        "model_name": "vgg",
        "model": {"arch": "vgg", "layers": [2, "M", 4]},
        "train": {"epochs": 2, "seed": 0},
    }
    paths = {e: tmp / f"e{e}.pt" for e in range(3)}
    for e, path in paths.items():
        train_model(path, spec, e, previous=paths.get(e - 1), device="cpu")
    return tmp, paths


def trainable(path):
    from landscape.train import load_model

    model, _ = load_model(path)
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def test_norms_and_histograms_equal_torch(run):
    tmp, paths = run
    out = tmp / "stats.h5"
    compute_weight_stats(paths, out, {"bins": 7})
    art = store.open(out)
    params = [trainable(paths[e]) for e in range(3)]
    names = list(params[0])
    assert art.attrs["names"] == names and art["epoch"].tolist() == [0, 1, 2]
    assert "features.1.running_mean" not in names  # buffers are no weights
    limit = max(float(t.abs().max()) for p in params for t in p.values())
    edges = torch.linspace(-limit, limit, 8, dtype=torch.float64)
    np.testing.assert_allclose(art["bin_edges"], edges.numpy(), rtol=1e-12)
    for e, p in enumerate(params):
        for j, name in enumerate(names):
            t = p[name].double()
            assert art["norms"][e, j] == pytest.approx(
                float(torch.linalg.vector_norm(t)), rel=1e-12
            )
            ref = torch.histogram(t.reshape(-1), bins=edges)[0].long().numpy()
            assert art["counts"][e, j].tolist() == ref.tolist(), (e, name)
        total = torch.sqrt(sum(t.double().pow(2).sum() for t in p.values()))
        assert art["total_norm"][e] == pytest.approx(float(total), rel=1e-12)
    # nothing outside the automatic range: every element is counted once
    sizes = [t.numel() for t in params[0].values()]
    assert art["counts"].sum(axis=2).tolist() == [sizes] * 3
    assert art["underflow"].sum() == 0 and art["overflow"].sum() == 0
    assert art.dims["counts"] == ("epoch", "parameter", "bin")
    plot_weight_stats(out, tmp / "stats.png")
    assert (tmp / "stats.png").stat().st_size > 0


def test_fixed_range_counts_what_falls_outside():
    states = [{"w": np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5])}]
    edges = histogram_edges(states, 4, 1.0)
    assert edges.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    stats = weight_statistics(states, edges)
    # numpy's bins: half-open, the last one closed (1.0 falls in the last bin)
    assert stats["counts"][0, 0].tolist() == [1, 1, 1, 2]
    assert stats["underflow"][0, 0] == 1 and stats["overflow"][0, 0] == 1
    assert stats["norms"][0, 0] == pytest.approx(np.sqrt(9 + 1 + 0.25 + 0.25 + 1 + 6.25))
    with pytest.raises(ValueError, match="bins"):
        histogram_edges(states, 0, None)
    with pytest.raises(ValueError, match="range"):
        histogram_edges(states, 3, -1.0)
