"""The artifact store: canonical JSON, atomic writes, HDF5 round trips, provenance, catalog."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

import landscape
from landscape import store

SPEC = {"lambda": {"min": -1.0, "max": 1.0, "num": 41}, "splits": ["train", "test"], "seed": 3}


def write_curve(path: Path, lam: np.ndarray, loss: np.ndarray, **kw) -> None:
    with store.create(path, kind="curve", spec=SPEC, **kw) as w:
        w.scale("lambda", lam)
        w.put("test/loss", loss, dims=("lambda",))
        w.put("test/error", loss / 10, dims=("lambda",))
        w.put("train/loss", loss * 2, dims=("lambda",))


def curve_values() -> tuple[np.ndarray, np.ndarray]:
    lam = np.linspace(-1, 1, 41)
    loss = lam**2 + 0.5
    loss[3] = np.nan
    loss[10] = np.inf
    loss[11] = -np.inf
    return lam, loss


# ----------------------------------------------------------------------------- canonical JSON


def test_canonical_json_is_independent_of_key_order():
    a = {"b": 1, "a": {"z": [1, 2], "y": "s"}}
    b = {"a": {"y": "s", "z": [1, 2]}, "b": 1}
    assert store.canonical_json(a) == store.canonical_json(b) == ('{"a":{"y":"s","z":[1,2]},"b":1}')
    assert store.canonical_json(OrderedDict(reversed(list(a.items())))) == store.canonical_json(a)


def test_canonical_json_converts_tuples_numpy_and_paths():
    obj = {
        "t": (1, (2, 3)),
        "n": np.float32(0.5),
        "i": np.int64(7),
        "b": np.bool_(True),
        "arr": np.arange(4).reshape(2, 2),
        "p": Path("results") / "x.h5",
        "nested": [{"k": (np.int32(1),)}],
    }
    text = store.canonical_json(obj)
    assert json.loads(text) == {
        "arr": [[0, 1], [2, 3]],
        "b": True,
        "i": 7,
        "n": 0.5,
        "nested": [{"k": [1]}],
        "p": "results/x.h5",
        "t": [1, [2, 3]],
    }
    assert " " not in text


def test_canonical_json_rejects_nan_and_names_bad_types():
    with pytest.raises(ValueError, match=r"a\.b"):
        store.canonical_json({"a": {"b": float("nan")}})
    with pytest.raises(ValueError):
        store.canonical_json([np.float64(np.inf)])
    with pytest.raises(TypeError, match=r"model\.hidden\[1\]"):
        store.canonical_json({"model": {"hidden": [1, object()]}})
    with pytest.raises(TypeError, match="set"):
        store.canonical_json({"s": {1, 2}})


def test_sha256_file_and_versions(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 MiB: several chunks
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert store.sha256_file(p) == hashlib.sha256(data).hexdigest()
    v = store.versions()
    assert v["landscape"] == landscape.__version__
    assert v["torch"] == str(torch.__version__)
    assert v["numpy"] == np.__version__
    assert v["h5py"] == h5py.__version__
    assert set(v) == {"landscape", "torch", "numpy", "h5py", "python"}


# ----------------------------------------------------------------------------- atomic_path


def test_atomic_path_renames_on_success(tmp_path):
    final = tmp_path / "sub" / "dir" / "model.pt"
    with store.atomic_path(final) as tmp:
        assert tmp.parent == final.parent
        assert tmp.name.startswith(".model.pt.tmp-") and tmp.suffix == ".pt"
        assert not final.exists()
        torch.save({"w": torch.arange(3)}, tmp)
    assert torch.equal(torch.load(final, weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in final.parent.iterdir()) == ["model.pt"]


def test_atomic_path_exception_leaves_nothing(tmp_path):
    final = tmp_path / "table.csv"
    with pytest.raises(RuntimeError, match="boom"), store.atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_keeps_existing_file(tmp_path):
    final = tmp_path / "table.csv"
    final.write_text("already computed")
    with pytest.raises(KeyboardInterrupt), store.atomic_path(final) as tmp:
        tmp.write_text("new but incomplete")
        raise KeyboardInterrupt
    assert final.read_text() == "already computed"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


# ----------------------------------------------------------------------------- HDF5 round trips


def test_curve_round_trip_preserves_nan_and_inf_bitwise(tmp_path):
    lam, loss = curve_values()
    path = tmp_path / "curves" / "c.h5"
    write_curve(path, lam, loss)
    art = store.open(path)
    assert art.kind == "curve" and art.spec == SPEC
    assert art.path == path
    np.testing.assert_array_equal(art["lambda"], lam)
    assert art["test/loss"].dtype == np.float64
    assert art["test/loss"].tobytes() == loss.tobytes()  # NaN, +inf, -inf bit for bit
    assert np.isnan(art["test/loss"][3]) and art["test/loss"][10] == np.inf
    assert art["test/loss"][11] == -np.inf
    assert set(art.data) == {"lambda", "test/loss", "test/error", "train/loss"}
    assert art.dims["test/loss"] == ("lambda",)
    assert art.dims["lambda"] == ("",)
    assert art.scales == ["lambda"]

    frame = art.frame()
    assert frame.index.name == "lambda"
    assert list(frame.columns) == ["test/error", "test/loss", "train/loss"]
    assert len(frame) == 41
    np.testing.assert_array_equal(frame.index.to_numpy(), lam)
    np.testing.assert_array_equal(frame["train/loss"].to_numpy(), loss * 2)
    assert frame.loc[lam[10], "test/loss"] == np.inf


def test_file_is_visible_to_h5py_with_dimension_scales(tmp_path):
    lam, loss = curve_values()
    path = tmp_path / "c.h5"
    write_curve(path, lam, loss)
    with h5py.File(path, "r") as f:
        assert f["lambda"].is_scale
        assert f["test/loss"].dims[0][0].name == "/lambda"
        assert f["test/loss"].dims[0].label == "lambda"
        assert f.attrs["kind"] == "curve"
        assert int(f.attrs["schema_version"]) == store.SCHEMA_VERSION


def test_non_square_grid_frame_matches_data(tmp_path):
    x = np.linspace(-1, 1, 7)
    y = np.linspace(-0.5, 0.5, 5)
    grid = np.add.outer(10 * x, y)  # grid[i, j] = 10 x[i] + y[j]
    grid[2, 3] = np.nan
    path = tmp_path / "surface.h5"
    with store.create(path, kind="surface", spec={"n": [7, 5]}) as w:
        w.scale("x", x)
        w.scale("y", y)
        w.put("test/loss", grid, dims=("x", "y"), attrs={"note": "2d"})
        w.put("test/error", -grid, dims=("x", "y"))
        w.put("extra", np.arange(3))  # no dims: not in the frame
    art = store.open(path)
    assert art.dims["test/loss"] == ("x", "y")
    assert art.dims["extra"] == ("",)
    assert art["test/loss"].shape == (7, 5)
    frame = art.frame()
    assert frame.index.names == ["x", "y"]
    assert list(frame.columns) == ["test/error", "test/loss"]
    assert len(frame) == 35
    for i in range(7):
        for j in range(5):
            row = frame.iloc[i * 5 + j]
            assert row.name == (x[i], y[j])
            np.testing.assert_equal(frame.loc[(x[i], y[j]), "test/loss"], grid[i, j])
            np.testing.assert_equal(row["test/error"], -grid[i, j])
    with h5py.File(path, "r") as f:
        assert f["test/loss"].dims[1][0].name == "/y"
        assert f["test/loss"].attrs["note"] == "2d"
    with pytest.raises(ValueError, match="extra"):
        art.frame(["test/loss", "extra"])


def test_put_rejects_mismatched_dims(tmp_path):
    path = tmp_path / "bad.h5"
    with pytest.raises(ValueError, match="test/loss"), store.create(path, "curve", SPEC) as w:
        w.scale("x", np.arange(7.0))
        w.scale("y", np.arange(5.0))
        w.put("test/loss", np.zeros((7, 5)), dims=("x",))
    assert not path.exists()
    with pytest.raises(ValueError, match="axis 1"), store.create(path, "curve", SPEC) as w:
        w.scale("x", np.arange(7.0))
        w.scale("y", np.arange(5.0))
        w.put("test/loss", np.zeros((7, 4)), dims=("x", "y"))
    with pytest.raises(ValueError, match="not a scale"), store.create(path, "curve", SPEC) as w:
        w.put("test/loss", np.zeros(3), dims=("lambda",))
    assert list(tmp_path.iterdir()) == []


def test_provenance_attributes(tmp_path):
    ckpt = tmp_path / "epoch2.pt"
    ckpt.write_bytes(b"pretend checkpoint bytes")
    lam, loss = curve_values()
    path = tmp_path / "c.h5"
    write_curve(path, lam, loss, inputs={"checkpoint": ckpt}, attrs={"epoch": 2, "run": "mlp"})
    art = store.open(path)
    expected_sha = hashlib.sha256(b"pretend checkpoint bytes").hexdigest()
    assert art.inputs == {"checkpoint": {"path": str(ckpt), "sha256": expected_sha}}
    assert art.attrs["schema_version"] == 1 and isinstance(art.attrs["schema_version"], int)
    assert art.attrs["spec"] == store.canonical_json(SPEC)
    assert json.loads(art.attrs["versions"]) == store.versions()
    assert art.attrs["epoch"] == 2 and art.attrs["run"] == "mlp"
    assert not any("time" in k or "date" in k for k in art.attrs)


def test_missing_input_is_an_artifact_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with (
        pytest.raises(store.ArtifactError, match=r"nope\.pt"),
        store.create(tmp_path / "c.h5", "curve", SPEC, inputs={"checkpoint": missing}),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


def test_same_content_twice_gives_identical_files(tmp_path):
    lam, loss = curve_values()
    write_curve(tmp_path / "a.h5", lam, loss)
    write_curve(tmp_path / "b.h5", lam, loss)
    a, b = store.open(tmp_path / "a.h5"), store.open(tmp_path / "b.h5")
    assert a.attrs == b.attrs
    for name in a.data:
        assert a[name].tobytes() == b[name].tobytes()
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_put_tensors_keeps_order_and_rejects_slash(tmp_path):
    names = ["features.0.weight", "features.0.bias", "classifier.weight", "bn.running_mean"]
    tensors = {n: torch.randn(3, i + 1) for i, n in enumerate(names)}
    tensors["bn.running_mean"] = np.arange(4.0)  # numpy accepted too
    path = tmp_path / "direction.h5"
    with store.create(path, kind="direction", spec={"seed": 1}) as w:
        w.put_tensors("params", tensors)
    art = store.open(path)
    assert art.data == {} and art.dims == {}
    got = art.tensors()
    assert list(got) == names  # insertion order, not HDF5's sorted order
    for n in names[:3]:
        np.testing.assert_array_equal(got[n], tensors[n].numpy())
    np.testing.assert_array_equal(got["bn.running_mean"], np.arange(4.0))
    with pytest.raises(KeyError, match="other"):
        art.tensors("other")
    with pytest.raises(ValueError, match="a/b"), store.create(path, "direction", {}) as w:
        w.put_tensors("params", {"ok": np.zeros(1), "a/b": np.zeros(1)})
    assert list(store.open(path).tensors()) == names  # failed rewrite kept the old file


# ----------------------------------------------------------------------------- failures


def test_truncated_h5_is_an_artifact_error(tmp_path):
    lam, loss = curve_values()
    path = tmp_path / "c.h5"
    write_curve(path, lam, loss)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(store.ArtifactError, match=re.escape(str(path))):
        store.open(path)
    garbage = tmp_path / "g.h5"
    garbage.write_text("not hdf5")
    with pytest.raises(store.ArtifactError, match=r"g\.h5"):
        store.open(garbage)


def test_foreign_h5_without_provenance_is_an_artifact_error(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(store.ArtifactError, match=r"foreign\.h5"):
        store.open(path)


def test_killed_mid_write_leaves_no_final_file(tmp_path):
    lam, loss = curve_values()
    path = tmp_path / "c.h5"
    with pytest.raises(MemoryError), store.create(path, "curve", SPEC) as w:
        w.scale("lambda", lam)
        w.put("test/loss", loss, dims=("lambda",))
        raise MemoryError  # the job dies half-way
    assert list(tmp_path.iterdir()) == []
    # an existing result survives a failed recomputation
    write_curve(path, lam, loss)
    with pytest.raises(RuntimeError), store.create(path, "curve", {"other": 1}) as w:
        w.scale("lambda", lam[:3])
        raise RuntimeError
    assert store.open(path).spec == SPEC
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]


def test_file_locking_setting(tmp_path, monkeypatch):
    lam, loss = curve_values()
    calls = []
    real = h5py.File

    def spy(*args, **kwargs):
        calls.append(kwargs.get("locking", "unset"))
        return real(*args, **kwargs)

    monkeypatch.setattr(store.h5py, "File", spy)
    try:
        store.set_file_locking(False)
        write_curve(tmp_path / "a.h5", lam, loss)
        assert store.open(tmp_path / "a.h5").kind == "curve"
        assert calls == [False, False]
    finally:
        store.set_file_locking(None)
    store.open(tmp_path / "a.h5")
    assert calls[-1] == "unset"
    with pytest.raises(TypeError):
        store.set_file_locking("no")


def test_read_checkpoint_and_truncated_checkpoint(tmp_path):
    path = tmp_path / "epoch1.pt"
    ckpt = {"model": {"w": torch.arange(6.0)}, "meta": {"kind": "checkpoint", "epoch": 1}}
    torch.save(ckpt, path)
    state = store.read_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.arange(6.0))
    assert state["meta"] == {"kind": "checkpoint", "epoch": 1}
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(store.ArtifactError, match=r"epoch1\.pt"):
        store.read_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        store.read_checkpoint(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- catalog


def make_results(root: Path) -> None:
    run = root / "digits" / "mlp" / "mlp"
    meta = {
        "kind": "checkpoint",
        "schema_version": 1,
        "spec": {"lr": 0.1},
        "inputs": {},
        "epoch": 2,
        "versions": store.versions(),
    }
    with store.atomic_path(run / "checkpoints" / "epoch2.pt") as tmp:
        torch.save({"model": {"w": torch.ones(2)}, "meta": meta}, tmp)
    lam, loss = curve_values()
    write_curve(
        run / "curves" / "epoch2" / "gauss.h5",
        lam,
        loss,
        inputs={"checkpoint": run / "checkpoints" / "epoch2.pt"},
    )
    with store.create(run / "directions" / "epoch2" / "gauss.h5", "direction", {"seed": 1}) as w:
        w.put_tensors("params", {"w": np.ones(2)})
    # leftovers of a killed job and an unrelated file
    (run / "curves" / "epoch2" / ".gauss.h5.tmp-123-abcd.h5").write_bytes(b"half")
    (run / "checkpoints" / ".epoch3.pt.tmp-9-ff.pt").write_bytes(b"half")
    (root / "notes.txt").write_text("ignored")


def test_catalog_lists_artifacts_and_flags_unreadable(tmp_path):
    make_results(tmp_path)
    broken = tmp_path / "digits" / "mlp" / "mlp" / "history.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    cat = store.catalog(tmp_path)
    assert list(cat["path"]) == [
        "digits/mlp/mlp/checkpoints/epoch2.pt",
        "digits/mlp/mlp/curves/epoch2/gauss.h5",
        "digits/mlp/mlp/directions/epoch2/gauss.h5",
        "digits/mlp/mlp/history.h5",
    ]
    assert list(cat["kind"]) == ["checkpoint", "curve", "direction", "unreadable"]
    assert "history.h5" in cat["error"].iloc[3]
    assert list(cat["error"].iloc[:3]) == ["", "", ""]
    assert list(cat["schema_version"].iloc[:3]) == [1, 1, 1]
    assert pd.isna(cat["schema_version"].iloc[3])
    assert json.loads(cat["spec"].iloc[0]) == {"lr": 0.1}
    assert json.loads(cat["spec"].iloc[1]) == SPEC
    curve_inputs = json.loads(cat["inputs"].iloc[1])
    ckpt = tmp_path / "digits/mlp/mlp/checkpoints/epoch2.pt"
    assert curve_inputs["checkpoint"]["sha256"] == store.sha256_file(ckpt)
    assert cat["sha256"].iloc[0] == store.sha256_file(ckpt)
    assert cat["size_bytes"].iloc[0] == ckpt.stat().st_size
    assert json.loads(cat["versions"].iloc[2]) == store.versions()
    assert list(cat["dataset"]) == ["digits"] * 4
    assert list(cat["run"]) == ["mlp"] * 4
    assert list(cat["epoch"].iloc[:3]) == [2, 2, 2] and pd.isna(cat["epoch"].iloc[3])
    assert list(cat["name"]) == ["epoch2", "gauss", "gauss", "history"]


def test_catalog_of_empty_dir(tmp_path):
    cat = store.catalog(tmp_path)
    assert cat.empty
    assert list(cat.columns) == store.CATALOG_COLUMNS
    for col in ("path", "kind", "schema_version", "spec", "inputs", "size_bytes", "sha256"):
        assert col in cat.columns


def test_write_catalog_writes_csv(tmp_path):
    make_results(tmp_path / "results")
    out = tmp_path / "results" / "catalog.csv"
    frame = store.write_catalog(tmp_path / "results", out)
    back = pd.read_csv(out, keep_default_na=False)
    assert list(back.columns) == store.CATALOG_COLUMNS
    assert list(back["path"]) == list(frame["path"])
    assert list(back["kind"]) == ["checkpoint", "curve", "direction"]
    assert list(back["sha256"]) == list(frame["sha256"])
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".catalog")] == []


# ----------------------------------------------------------------------------- deterministic bytes


def test_checkpoint_bytes_do_not_depend_on_the_file_name(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "meta": {"epoch": 1, "h": [0.5]}}
    store.write_checkpoint(state, tmp_path / "a" / "epoch1.pt")
    store.write_checkpoint(dict(state), tmp_path / "b" / "other.pt")
    a, b = (tmp_path / "a" / "epoch1.pt").read_bytes(), (tmp_path / "b" / "other.pt").read_bytes()
    assert a == b
    back = store.read_checkpoint(tmp_path / "b" / "other.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["meta"] == state["meta"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["epoch1.pt"]


def test_recorded_provenance_is_kept_and_checked(tmp_path):
    record = {"path": "results/x/epoch1.pt", "sha256": "ab" * 32}
    lam, loss = curve_values()
    write_curve(tmp_path / "c.h5", lam, loss, inputs={"checkpoint": record})
    assert store.open(tmp_path / "c.h5").inputs == {"checkpoint": record}
    with pytest.raises(store.ArtifactError, match=r"d\.h5: input 'checkpoint' record"):
        write_curve(tmp_path / "d.h5", lam, loss, inputs={"checkpoint": {"path": "x"}})
    assert not (tmp_path / "d.h5").exists()


# ----------------------------------------------------------------------------- disk full


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("kind", ["hdf5", "checkpoint"])
def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, kind):
    final = tmp_path / ("c.h5" if kind == "hdf5" else "epoch1.pt")
    final.write_bytes(b"already computed")
    lam, loss = curve_values()
    with monkeypatch.context() as m:
        m.setattr(store.os, "fsync", _no_space)  # where a full disk (or NFS) reports ENOSPC
        with pytest.raises(store.DiskFullError) as caught:
            if kind == "hdf5":
                write_curve(final, lam, loss)
            else:
                store.write_checkpoint({"model": {"w": torch.ones(3)}, "meta": {}}, final)
    message = str(caught.value)
    assert message.startswith(f"disk full while writing {final} (temporary {tmp_path}/.")
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert final.read_bytes() == b"already computed"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_other_write_errors_are_not_called_disk_full(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(store.os, "fsync", denied)
    with pytest.raises(OSError) as caught:
        store.write_bytes(tmp_path / "t.csv", b"x")
    assert not isinstance(caught.value, store.DiskFullError)
    assert caught.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


FULL_DISK_SCRIPT = """
import os, sys, numpy as np, torch
from landscape import store
d = sys.argv[1]
try:  # 8 datasets of 4 KB: HDF5 would fail while flushing its metadata cache on close
    with store.create(f"{d}/surface.h5", "surface", {}) as w:
        w.scale("x", np.arange(500.0))
        for k in range(8):
            w.put(f"s{k}/loss", np.zeros(500), dims=("x",))
except store.DiskFullError as exc:
    print(exc)
try:  # 80 KB: torch.save to the file would fail with 'unexpected pos'
    store.write_checkpoint({"w": torch.zeros(20000)}, f"{d}/epoch1.pt")
except store.DiskFullError as exc:
    print(exc)
print(sorted(os.listdir(d)))
"""


def test_a_really_full_disk_gives_one_message_per_file(tmp_path):
    """36 KiB tmpfs in a user namespace (skipped where that is not allowed)."""
    import shutil
    import subprocess
    import sys

    mnt = tmp_path / "full"
    mnt.mkdir()
    mount = f"mount -t tmpfs -o size=36k tmpfs {mnt}"
    probe = ["unshare", "-rm", "sh", "-c", mount]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    script = tmp_path / "fill.py"
    script.write_text(FULL_DISK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(landscape.__file__).parents[1])}
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"{mount} && {sys.executable} {script} {mnt}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no tracebacks from HDF5 or torch
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"disk full while writing {mnt}/surface.h5 (temporary {mnt}/.")
    assert lines[1].startswith(f"disk full while writing {mnt}/epoch1.pt (temporary {mnt}/.")
    assert lines[2] == "[]"  # nothing half-written, no temporary left


# ----------------------------------------------------------------------------- stale artifacts


def _chain_of_artifacts(root: Path) -> dict[str, Path]:
    """checkpoint -> direction -> curve (reads only the direction), and a curve of both."""
    run = root / "digits" / "mlp" / "mlp"
    paths = {
        "checkpoint": run / "checkpoints" / "epoch2.pt",
        "direction": run / "directions" / "epoch2" / "d.h5",
        "curve": run / "curves" / "epoch2" / "c.h5",
        "via_direction": run / "curves" / "epoch2" / "v.h5",
    }
    store.write_checkpoint(
        {"model": {"w": torch.ones(2)}, "meta": {"epoch": 2}}, paths["checkpoint"]
    )
    with store.create(
        paths["direction"], "direction", {}, inputs={"checkpoint": paths["checkpoint"]}
    ) as w:
        w.put_tensors("params", {"w": np.ones(2)})
    lam, loss = curve_values()
    write_curve(
        paths["curve"],
        lam,
        loss,
        inputs={"checkpoint": paths["checkpoint"], "direction": paths["direction"]},
    )
    write_curve(paths["via_direction"], lam, loss, inputs={"direction": paths["direction"]})
    return paths


def _stale(cat: pd.DataFrame) -> dict[str, object]:
    return {Path(p).name: s for p, s in zip(cat["path"], cat["stale"], strict=True)}


def test_catalog_marks_artifacts_of_changed_inputs_stale(tmp_path):
    paths = _chain_of_artifacts(tmp_path)
    assert _stale(store.catalog(tmp_path)) == {
        "epoch2.pt": False,
        "d.h5": False,
        "c.h5": False,
        "v.h5": False,
    }
    # retrained: same name, other weights
    store.write_checkpoint(
        {"model": {"w": torch.zeros(2)}, "meta": {"epoch": 2}}, paths["checkpoint"]
    )
    cat = store.catalog(tmp_path)
    assert cat["stale"].dtype == "boolean"
    # v.h5 records only the direction, whose hash still matches: stale through the direction
    assert _stale(cat) == {"epoch2.pt": False, "d.h5": True, "c.h5": True, "v.h5": True}


def test_catalog_marks_artifacts_of_missing_inputs_stale_and_unreadable_as_unknown(tmp_path):
    paths = _chain_of_artifacts(tmp_path)
    paths["checkpoint"].unlink()
    paths["via_direction"].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    cat = store.catalog(tmp_path)
    stale = _stale(cat)
    assert stale["d.h5"] == True and stale["c.h5"] == True  # noqa: E712
    unreadable = cat[cat["kind"] == "unreadable"]
    assert pd.isna(stale["v.h5"]) and list(unreadable["name"]) == ["v"]


def test_catalog_resolves_relative_inputs_against_the_working_directory(tmp_path):
    results = tmp_path / "results"
    ckpt = results / "digits" / "mlp" / "mlp" / "checkpoints" / "epoch1.pt"
    store.write_checkpoint({"model": {}, "meta": {}}, ckpt)
    lam, loss = curve_values()
    record = {
        "path": "results/digits/mlp/mlp/checkpoints/epoch1.pt",
        "sha256": store.sha256_file(ckpt),
    }
    write_curve(
        results / "digits" / "mlp" / "mlp" / "curves" / "c.h5",
        lam,
        loss,
        inputs={"checkpoint": record},
    )
    assert list(store.catalog(results)["stale"]) == [False, False]  # base: results' parent
    assert list(store.catalog(results, base=results)["stale"]) == [False, True]
    out = results / "catalog.csv"
    store.write_catalog(results, out)
    assert list(pd.read_csv(out)["stale"]) == [False, False]
