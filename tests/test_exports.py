"""Downstream analysis: curves and surfaces in xarray, surfaces as VTK polydata and HTML pages."""

from __future__ import annotations

import builtins
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from landscape import store

DATASET = {"source": "digits"}
EVAL = {"splits": ["train", "test"], "bn_mode": "keep", "batch_size": 256}
CURVE_SPEC = {"lambda": {"min": -1.0, "max": 1.0, "num": 5}, **EVAL}
SURFACE_SPEC = {
    "directions": ["a", "b"],
    "x": {"min": -1.0, "max": 1.0, "num": 4},
    "y": {"min": -0.5, "max": 0.5, "num": 3},
    **EVAL,
}


@pytest.fixture(scope="module")
def grid_files(tmp_path_factory):
    """A curve and a surface of a tiny MLP, written by the workflow's own functions."""
    from landscape.directions import write_direction
    from landscape.evaluate import compute_curve, compute_surface_shard
    from landscape.surface_merge import merge_surface
    from landscape.train import train_model

    tmp = tmp_path_factory.mktemp("grids")
    run = {"run": "r", "dataset_name": "digits", "dataset": DATASET, "model_name": "mlp"}
    run |= {"model": {"arch": "mlp", "hidden": [8]}, "train": {"epochs": 1, "seed": 0}}
    train_model(tmp / "e0.pt", run, 0, device="cpu")
    for name, seed in (("a", 1), ("b", 2)):
        write_direction(tmp / "e0.pt", tmp / f"{name}.h5", {"seed": seed}, device="cpu")
    compute_curve(tmp / "e0.pt", tmp / "a.h5", tmp / "curve.h5", CURVE_SPEC, DATASET, "cpu")
    directions = [tmp / "a.h5", tmp / "b.h5"]
    shards = [tmp / f"s{i}.h5" for i in (1, 2)]
    for i, shard in enumerate(shards, start=1):
        compute_surface_shard(tmp / "e0.pt", directions, shard, SURFACE_SPEC, DATASET, f"{i}-of-2")
    merge_surface(shards, tmp / "surface.h5", SURFACE_SPEC)
    return {"curve": tmp / "curve.h5", "surface": tmp / "surface.h5"}


# ----------------------------------------------------------------------------- xarray (item 8)


def _assert_matches_store(ds, art: store.Artifact) -> None:
    """Values and coordinates of a Dataset equal the store reader's, bit for bit."""
    gridded = [n for n, d in art.dims.items() if n not in art.scales and d and all(d)]
    assert gridded
    assert sorted(ds.data_vars) == sorted(store.netcdf_name(n) for n in gridded)
    for name in gridded:
        var = ds[store.netcdf_name(name)]
        assert var.dims == art.dims[name]
        np.testing.assert_array_equal(var.values, art[name])
        assert var.dtype == art[name].dtype
    for scale in art.scales:
        assert scale in ds.coords and ds.indexes[scale].name == scale
        np.testing.assert_array_equal(ds[scale].values, art[scale])


@pytest.mark.parametrize("kind", ["curve", "surface"])
def test_grid_files_open_in_xarray_with_named_dims_and_coordinates(grid_files, kind):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path = grid_files[kind]
    art = store.open(path)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds.load()
    dims = {"curve": {"lambda": 5}, "surface": {"x": 4, "y": 3}}[kind]
    assert dict(ds.sizes) == dims
    _assert_matches_store(ds, art)
    for split in ("train", "test"):
        assert ds[f"{split}_loss"].dims == tuple(dims)
        assert ds[f"{split}_error"].dims == tuple(dims)
    xr.testing.assert_identical(art.to_xarray(), ds)
    _assert_matches_store(art.to_xarray(), art)
    # Provenance survives as text any JSON reader parses.
    assert ds.attrs["kind"] == kind
    assert json.loads(ds.attrs["spec"]) == art.spec
    assert json.loads(ds.attrs["inputs"]) == art.inputs
    assert json.loads(ds.attrs["versions"])["landscape"]
    assert int(ds.attrs["epoch"]) == 0 and ds.attrs["run"] == "r"


def test_curve_analysis_is_a_group_of_the_datatree(grid_files):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    art = store.open(grid_files["curve"])
    tree = xr.open_datatree(grid_files["curve"], engine="h5netcdf")
    node = tree["analysis/test/loss"].to_dataset()
    assert str(node["type"].values) == art["analysis/test/loss/type"]
    np.testing.assert_array_equal(node["lambda"].values, art["lambda"])
    np.testing.assert_array_equal(node["stationary"].values, art["analysis/test/loss/stationary"])
    np.testing.assert_array_equal(tree["test"].to_dataset()["loss"].values, art["test/loss"])


def test_links_for_netcdf_leave_the_store_reader_unchanged(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    x, y = np.linspace(-1, 1, 5), np.array([0.0, 0.5, 2.0])
    grid = np.add.outer(x, y**2)
    grid[1, 2], grid[3, 0], grid[0, 0] = np.nan, np.inf, -np.inf
    path = tmp_path / "s.h5"
    with store.create(path, kind="surface", spec={"k": 1}, attrs={"batchnorm": True}) as w:
        w.scale("x", x)
        w.scale("y", y)
        w.put("test/loss", grid, dims=("x", "y"), attrs={"note": "2d"})
        w.put("test/error", grid.astype(np.float32), dims=("x", "y"))
        w.put("count", 7)
        w.put("params/scalar", 1.5)  # in a group without scales: not at the root
    art = store.open(path)
    assert sorted(art.data) == ["count", "params/scalar", "test/error", "test/loss", "x", "y"]
    assert art.data_attrs["test/loss"]["note"] == "2d"
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    assert sorted(ds.data_vars) == ["count", "test_error", "test_loss"]
    assert ds["test_loss"].attrs["note"] == "2d"
    assert ds["test_error"].dtype == np.float32
    np.testing.assert_array_equal(ds["test_loss"].values, grid)  # NaN and inf as stored
    xr.testing.assert_identical(art.to_xarray(), ds)


def test_a_taken_link_name_is_one_clear_error(tmp_path):
    path = tmp_path / "s.h5"
    with (
        pytest.raises(store.ArtifactError, match=r"'test/loss'.*'test_loss' already exists"),
        store.create(path, kind="surface", spec={}) as w,
    ):
        w.scale("x", np.arange(3.0))
        w.put("test_loss", np.zeros(3), dims=("x",))
        w.put("test/loss", np.ones(3), dims=("x",))
    assert not path.exists()


def test_to_xarray_without_xarray_names_the_extra(grid_files, monkeypatch):
    real_import = builtins.__import__

    def no_xarray(name, *args, **kwargs):
        if name == "xarray" or name.startswith("xarray."):
            raise ImportError("No module named 'xarray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xarray)
    with pytest.raises(ImportError, match=r"pip install xarray h5netcdf.*\[xarray\]"):
        store.open(grid_files["curve"]).to_xarray()


# ----------------------------------------------------------------------------- VTK polydata


def _write_surface(path: Path, x: np.ndarray, y: np.ndarray, grids: dict) -> None:
    attrs = {"batchnorm": False}
    with store.create(path, kind="surface", spec={"bn_mode": "keep"}, attrs=attrs) as w:
        w.scale("x", x)
        w.scale("y", y)
        for name, values in grids.items():
            w.put(name, values, dims=("x", "y"))


def _odd_surface(path: Path) -> dict:
    """A non-square surface with NaN, +inf and -inf points; returns its grids."""
    x, y = np.linspace(-1.0, 1.0, 6), np.linspace(-0.5, 0.25, 4)
    loss = 0.1 + np.add.outer(x**2, 3 * y**2) + np.add.outer(np.arange(6), np.zeros(4)) / 7
    test = loss * 1.5
    test[1, 2], test[4, 0], test[5, 3] = np.nan, np.inf, -np.inf
    grids = {
        "train/loss": loss,
        "train/error": np.clip(loss / 5, 0, 1),
        "test/loss": test,
        "test/error": np.full_like(loss, np.nan),
    }
    _write_surface(path, x, y, grids)
    return {"x": x, "y": y, **grids}


def _vtk_array(element: ET.Element) -> np.ndarray:
    """A DataArray's values, decoded here from the VTK XML rules (not by the writer's code)."""
    dtype = {"Float64": "<f8", "Float32": "<f4", "Int64": "<i8", "UInt8": "u1"}[element.get("type")]
    text = element.text.strip()
    if element.get("format") == "ascii":
        return np.array([float(v) for v in text.split()], dtype=dtype)
    assert element.get("format") == "binary"
    import base64

    raw = base64.b64decode(text)
    count = int(np.frombuffer(raw[:8], "<u8")[0])  # header_type UInt64: the byte count
    assert count == len(raw) - 8
    return np.frombuffer(raw[8:], dtype=dtype)


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_vtp_is_polydata_of_the_grid_and_round_trips_every_value(tmp_path, encoding):
    from landscape.exports import write_vtp

    grids = _odd_surface(tmp_path / "s.h5")
    x, y = grids["x"], grids["y"]
    nx, ny = len(x), len(y)
    assert write_vtp(tmp_path / "s.h5", tmp_path / "s.vtp", log=False, encoding=encoding) == (
        "train/loss"
    )
    root = ET.parse(tmp_path / "s.vtp").getroot()
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    assert root.get("byte_order") == "LittleEndian" and root.get("header_type") == "UInt64"
    piece = root.find("PolyData/Piece")
    assert int(piece.get("NumberOfPoints")) == nx * ny

    points = _vtk_array(piece.find("Points/DataArray")).reshape(-1, 3)
    for i in range(nx):
        for j in range(ny):
            assert tuple(points[i * ny + j]) == (x[i], y[j], grids["train/loss"][i, j])

    arrays = {a.get("Name"): _vtk_array(a) for a in piece.find("PointData")}
    assert set(arrays) == {"drawn", "train_loss", "train_error", "test_loss", "test_error"}
    for name in ("train/loss", "train/error", "test/loss", "test/error"):
        got = arrays[name.replace("/", "_")].reshape(nx, ny)
        np.testing.assert_array_equal(got, grids[name])  # NaN, inf and -inf where they were
    assert arrays["drawn"].all()

    # One quad per grid cell (i, j)-(i+1, j+1), corners counter-clockwise in the x-y plane.
    connectivity = _vtk_array(piece.find("Polys/DataArray[@Name='connectivity']")).reshape(-1, 4)
    offsets = _vtk_array(piece.find("Polys/DataArray[@Name='offsets']"))
    assert int(piece.get("NumberOfPolys")) == len(connectivity) == (nx - 1) * (ny - 1)
    np.testing.assert_array_equal(offsets, 4 * np.arange(1, len(connectivity) + 1))
    cells = set()
    for quad in connectivity:
        corners = [divmod(int(p), ny) for p in quad]
        (i, j) = corners[0]
        assert corners == [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)]
        cells.add((i, j))
    assert cells == {(i, j) for i in range(nx - 1) for j in range(ny - 1)}


def test_vtp_leaves_holes_where_the_height_is_not_finite(tmp_path):
    from landscape.exports import write_vtp

    path = tmp_path / "s.h5"
    x, y = np.linspace(-1.0, 1.0, 5), np.linspace(-1.0, 1.0, 3)
    loss = np.add.outer(x**2, y**2) + 0.5
    loss[2, 1], loss[0, 0] = np.nan, np.inf
    _write_surface(path, x, y, {"test/loss": loss})
    write_vtp(path, tmp_path / "s.vtp", log=True)
    piece = ET.parse(tmp_path / "s.vtp").getroot().find("PolyData/Piece")
    points = _vtk_array(piece.find("Points/DataArray")).reshape(-1, 3)
    assert np.isfinite(points).all()
    finite = np.isfinite(loss)
    np.testing.assert_array_equal(points[:, 2].reshape(5, 3)[finite], np.log10(loss[finite]))
    drawn = {a.get("Name"): _vtk_array(a) for a in piece.find("PointData")}["drawn"]
    np.testing.assert_array_equal(drawn.reshape(5, 3), finite)
    connectivity = _vtk_array(piece.find("Polys/DataArray[@Name='connectivity']")).reshape(-1, 4)
    expected = {
        (i, j)
        for i in range(4)
        for j in range(2)
        if finite[i, j] and finite[i + 1, j] and finite[i, j + 1] and finite[i + 1, j + 1]
    }
    assert {divmod(int(q[0]), 3) for q in connectivity} == expected
    assert len(expected) == 8 - 1 - 4  # the inf corner cell and the four cells around the NaN


# ----------------------------------------------------------------------------- interactive page


# WebGL without a GPU: Chromium's software renderer, which it keeps off unless asked.
SOFTWARE_WEBGL = [
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--ignore-gpu-blocklist",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_interactive_page_shows_the_surface_in_a_headless_browser(tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    from landscape.exports import HTML_DIV_ID, write_html

    grids = _odd_surface(tmp_path / "s.h5")
    nx, ny = len(grids["x"]), len(grids["y"])
    page_path = tmp_path / "s.html"
    write_html(tmp_path / "s.h5", page_path, log=False, title="odd")
    assert "<script src=" not in page_path.read_text()  # plotly.js is inline: works offline
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path,
            args=SOFTWARE_WEBGL,
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_function(
                f"""() => {{
                    const gd = document.getElementById({json.dumps(HTML_DIV_ID)});
                    return gd && gd._fullLayout && gd._fullLayout.scene
                        && gd._fullLayout.scene._scene && gd._fullLayout.scene._scene.glplot;
                }}""",
                timeout=60_000,
            )
            shown = page.evaluate(
                f"""() => {{
                    const gd = document.getElementById({json.dumps(HTML_DIV_ID)});
                    return {{
                        traces: gd.data.map(t => ({{type: t.type, name: t.name, x: t.x, y: t.y,
                                                    z: t.z, visible: t.visible}})),
                        title: gd._fullLayout.title.text,
                        footer: gd._fullLayout.annotations.map(a => a.text).join(" "),
                        webgl_message: gd.innerText.includes("WebGL"),
                    }};
                }}"""
            )
        finally:
            browser.close()
    assert problems == []
    assert not shown["webgl_message"]
    traces = {t["name"]: t for t in shown["traces"]}
    assert set(traces) == {"train loss", "test loss", "train error", "test error"}
    assert all(t["type"] == "surface" for t in traces.values())
    assert [t["visible"] for t in shown["traces"]] == [True, False, False, False]
    for name, trace in traces.items():
        grid = grids[name.replace(" ", "/")]
        assert trace["x"] == grids["x"].tolist() and trace["y"] == grids["y"].tolist()
        assert len(trace["z"]) == ny and all(len(row) == nx for row in trace["z"])
        z = np.array([[np.nan if v is None else v for v in row] for row in trace["z"]]).T
        finite = np.isfinite(grid)
        np.testing.assert_array_equal(z[finite], grid[finite])
        assert np.isnan(z[~finite]).all()  # NaN and inf: holes (null), never drawn
    assert shown["title"] == "odd: train loss"
    assert "test loss: 1 NaN (not computed), 1 +inf, 1 -inf" in shown["footer"]
    assert "test error: 24 NaN (not computed)" in shown["footer"]
