"""Sharded 2D surfaces: shards cover the grid, merge in x/y order, missing points are NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import store
from landscape.directions import write_direction
from landscape.evaluate import compute_surface_shard, evaluate_grid, fixed_bn_batches
from landscape.lambda_grids import lambda_grid, shard_indices
from landscape.surface_merge import merge_surface
from landscape.train import load_model, train_model

DATASET = {"source": "digits"}
SPEC = {
    "directions": ["a", "b"],
    "orthogonalize": False,
    "x": {"min": -1.0, "max": 1.0, "num": 7},
    "y": {"min": -0.5, "max": 0.5, "num": 5},
    "splits": ["test"],
    "bn_mode": "recompute",
    "bn_batches": 2,
    "batch_size": 256,
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("surface")
    spec = {
        "run": "r",
        "dataset_name": "digits",
        "dataset": DATASET,
        "model_name": "vgg",
        "model": {"arch": "vgg", "layers": [4, "M", 8]},
        "train": {"epochs": 1, "seed": 0},
    }
    train_model(tmp / "e0.pt", spec, 0, device="cpu")
    train_model(tmp / "e1.pt", spec, 1, previous=tmp / "e0.pt", device="cpu")
    for name, seed in (("a", 1), ("b", 2)):
        write_direction(tmp / "e1.pt", tmp / f"{name}.h5", {"seed": seed}, device="cpu")
    return tmp


def test_shard_indices_partition_the_grid():
    parts = [shard_indices(35, f"{i}-of-4") for i in range(1, 5)]
    assert np.array_equal(np.concatenate(parts), np.arange(35))
    assert [len(p) for p in parts] == [9, 9, 9, 8]
    with pytest.raises(ValueError, match="scatteritem"):
        shard_indices(35, "5-of-4")
    with pytest.raises(ValueError, match="scatteritem"):
        shard_indices(35, "first")


def test_merged_shards_equal_one_grid_and_missing_shard_is_nan(inputs):
    dirs = [inputs / "a.h5", inputs / "b.h5"]
    shards = [inputs / f"s{i}.h5" for i in range(1, 4)]
    for i, path in enumerate(shards, start=1):
        compute_surface_shard(inputs / "e1.pt", dirs, path, SPEC, DATASET, f"{i}-of-3", "cpu")
    merge_surface(shards, inputs / "surface.h5", SPEC)
    surface = store.open(inputs / "surface.h5")
    assert surface.kind == "surface" and surface.attrs["subset_seed"] == 0
    assert surface["test/loss"].shape == (7, 5)
    assert surface.dims["test/loss"] == ("x", "y")

    model, _ = load_model(inputs / "e1.pt")
    from landscape.data import load_data

    data = load_data(DATASET)
    vectors = [{n: torch.as_tensor(v) for n, v in store.open(p).tensors().items()} for p in dirs]
    xs, ys = lambda_grid(SPEC["x"]), lambda_grid(SPEC["y"])
    i, j = 5, 1  # a non-symmetric point: x index 5, y index 1
    bn = fixed_bn_batches(data, SPEC)
    direct = evaluate_grid(
        model, vectors, np.array([[xs[i], ys[j]]]), {"test": data.test}, bn_batches=bn
    )
    assert surface["test/loss"][i, j] == pytest.approx(direct["test"]["loss"][0], rel=1e-5)
    frame = surface.frame()
    assert frame.loc[(xs[i], ys[j]), "test/loss"] == surface["test/loss"][i, j]

    merge_surface(shards[:2], inputs / "partial.h5", SPEC)
    partial = store.open(inputs / "partial.h5")["test/loss"].reshape(-1)
    missing = shard_indices(35, "3-of-3")
    assert np.isnan(partial[missing]).all()
    assert np.isfinite(np.delete(partial, missing)).all()


def test_merge_rejects_a_shard_of_another_spec(inputs):
    other = {**SPEC, "bn_mode": "keep"}
    dirs = [inputs / "a.h5", inputs / "b.h5"]
    compute_surface_shard(inputs / "e1.pt", dirs, inputs / "o.h5", other, DATASET, "1-of-9", "cpu")
    with pytest.raises(ValueError, match="spec"):
        merge_surface([inputs / "o.h5"], inputs / "bad.h5", SPEC)
