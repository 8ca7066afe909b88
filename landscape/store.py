"""The artifact store: HDF5 files with provenance, atomic writes, a reader API and a catalog.

Every HDF5 artifact carries root attributes ``schema_version``, ``kind``, ``spec`` (canonical JSON
of the config block that made it), ``inputs`` (canonical JSON of ``{name: {path, sha256}}``) and
``versions``. Grids are datasets with attached dimension scales (``lambda``, ``x``, ``y``, ...);
values are stored as they came (NaN = never computed, inf stays inf). Files are written under a
temporary sibling name and renamed into place only when complete.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import platform
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
_TMP_MARK = ".tmp-"
_LOCKING: bool | None = None
CATALOG_COLUMNS = [
    "path",
    "kind",
    "schema_version",
    "spec",
    "inputs",
    "versions",
    "size_bytes",
    "sha256",
    "error",
]


class ArtifactError(ValueError):
    """An artifact that cannot be read or written; the message names the file."""


def _plain(obj: Any, where: str) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise TypeError(f"canonical_json: {where or 'value'} has unsupported type {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, tuples as lists; NaN is rejected.

    >>> canonical_json({"b": (1, 2), "a": {"y": None, "x": 1.5}})
    '{"a":{"x":1.5,"y":null},"b":[1,2]}'
    """
    return json.dumps(_plain(obj, ""), sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with builtins.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of the library and of the packages that shape its numbers."""
    import torch

    from landscape import __version__

    return {
        "landscape": __version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
    }


def set_file_locking(enabled: bool | None) -> None:
    """Switches HDF5 file locking on or off (off for NFS); None follows HDF5_USE_FILE_LOCKING."""
    global _LOCKING
    _LOCKING = enabled


def _h5file(path: str | os.PathLike, mode: str) -> h5py.File:
    if _LOCKING is None:
        return h5py.File(path, mode)
    return h5py.File(path, mode, locking=_LOCKING)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling of ``path``; renames it to ``path`` when the block succeeds.

    On an exception the temporary file is removed and an existing ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(
        f".{final.stem}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{final.suffix}"
    )
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


class Writer:
    """Writes datasets, dimension scales and tensors into one artifact being created."""

    def __init__(self, file: h5py.File):
        self.file = file

    def scale(self, name: str, values: Any) -> h5py.Dataset:
        """A 1-D coordinate dataset at the root, made an HDF5 dimension scale."""
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(f"scale {name!r}: must be 1-D, got shape {values.shape}")
        ds = self.file.create_dataset(name, data=values)
        ds.make_scale(name)
        return ds

    def put(
        self,
        name: str,
        values: Any,
        dims: Sequence[str] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> h5py.Dataset:
        """A dataset, with its axes attached to the named scales.

        Raises:
            ValueError: if ``dims`` does not match the shape of ``values`` or the scales.
        """
        values = np.asarray(values)
        if dims is not None:
            if len(dims) != values.ndim:
                raise ValueError(f"{name}: {len(dims)} dims for an array of shape {values.shape}")
            for axis, dim in enumerate(dims):
                if dim not in self.file:
                    raise ValueError(f"{name}: axis {axis} refers to missing scale {dim!r}")
                if len(self.file[dim]) != values.shape[axis]:
                    raise ValueError(
                        f"{name}: axis {axis} has length {values.shape[axis]}, "
                        f"scale {dim!r} has {len(self.file[dim])}"
                    )
        ds = self.file.create_dataset(name, data=values)
        for axis, dim in enumerate(dims or ()):
            ds.dims[axis].attach_scale(self.file[dim])
            ds.dims[axis].label = dim
        for key, value in (attrs or {}).items():
            ds.attrs[key] = value
        return ds

    def put_tensors(self, group: str, tensors: Mapping[str, Any]) -> None:
        """One dataset per named tensor under ``group``, keeping the given order.

        Raises:
            ValueError: for a name containing ``/``.
        """
        g = self.file.require_group(group)
        for name, value in tensors.items():
            if "/" in name:
                raise ValueError(f"{group}: tensor name {name!r} must not contain '/'")
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            g.create_dataset(name, data=np.asarray(value))
        g.attrs["order"] = json.dumps(list(tensors))


@contextlib.contextmanager
def create(
    path: str | os.PathLike,
    kind: str,
    spec: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Iterator[Writer]:
    """Creates an HDF5 artifact atomically, with its provenance attributes.

    Raises:
        ArtifactError: if an input file does not exist.
    """
    provenance = {}
    for name, p in (inputs or {}).items():
        if not Path(p).is_file():
            raise ArtifactError(f"{path}: input {name!r} file {p} does not exist")
        provenance[name] = {"path": os.fspath(p), "sha256": sha256_file(p)}
    with atomic_path(path) as tmp:
        with _h5file(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["kind"] = kind
            f.attrs["spec"] = canonical_json(spec)
            f.attrs["inputs"] = canonical_json(provenance)
            f.attrs["versions"] = canonical_json(versions())
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            yield Writer(f)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Artifact:
    """An HDF5 artifact read into memory: attributes, datasets and their dimension scales."""

    path: Path
    kind: str
    spec: dict
    inputs: dict
    attrs: dict
    data: dict[str, np.ndarray]
    dims: dict[str, tuple[str, ...]]
    groups: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def tensors(self, group: str = "params") -> dict[str, np.ndarray]:
        """The named tensors stored under ``group``, in their stored order."""
        return self.groups[group]

    def frame(self, names: Sequence[str] | None = None) -> pd.DataFrame:
        """A wide table of the datasets sharing one set of dims, indexed by their scales.

        For a 2-D grid the index is ``(x, y)`` in C order: row ``i * len(y) + j`` holds
        ``data[name][i, j]``.
        """
        gridded = [n for n, d in self.dims.items() if d and n not in d]
        if names is None:
            if not gridded:
                raise ValueError(f"{self.path}: no dataset with dimension scales")
            names = [n for n in gridded if self.dims[n] == self.dims[gridded[0]]]
        dims = self.dims[names[0]]
        if any(self.dims.get(n) != dims for n in names):
            raise ValueError(f"{self.path}: datasets {list(names)} do not share dims")
        if len(dims) == 1:
            index = pd.Index(self.data[dims[0]], name=dims[0])
        else:
            index = pd.MultiIndex.from_product([self.data[d] for d in dims], names=list(dims))
        return pd.DataFrame({n: self.data[n].reshape(-1) for n in names}, index=index)


def open(path: str | os.PathLike) -> Artifact:
    """Reads a whole HDF5 artifact into memory.

    Raises:
        ArtifactError: for a missing, truncated or non-HDF5 file, naming it.
    """
    path = Path(path)
    try:
        with _h5file(path, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            data: dict[str, np.ndarray] = {}
            dims: dict[str, tuple[str, ...]] = {}
            groups: dict[str, dict[str, np.ndarray]] = {}

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group) and "order" in obj.attrs:
                    order = json.loads(_attr(obj.attrs["order"]))
                    groups[name] = {k: obj[k][()] for k in order}
                elif isinstance(obj, h5py.Dataset) and name.split("/")[0] not in groups:
                    data[name] = obj[()]
                    dims[name] = tuple(
                        obj.dims[i][0].name.lstrip("/") if len(obj.dims[i]) else ""
                        for i in range(obj.ndim)
                    )

            f.visititems(visit)
    except (OSError, KeyError) as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 artifact ({exc})") from exc
    if "kind" not in attrs:
        raise ArtifactError(f"{path}: HDF5 file without the store's provenance attributes")
    return Artifact(
        path=path,
        kind=attrs["kind"],
        spec=json.loads(attrs.get("spec", "{}")),
        inputs=json.loads(attrs.get("inputs", "{}")),
        attrs=attrs,
        data=data,
        dims=dims,
        groups=groups,
    )


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a checkpoint with ``weights_only=True`` on the CPU.

    Raises:
        ArtifactError: for a missing, truncated or foreign file, naming it.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable checkpoint ({exc})") from exc
    except Exception as exc:  # pickle.UnpicklingError and zipfile errors vary by torch version
        raise ArtifactError(f"{path}: not a readable checkpoint ({exc})") from exc


def _row(path: Path, root: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path.relative_to(root).as_posix(),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    try:
        if path.suffix == ".h5":
            art = open(path)
            attrs = art.attrs
            row.update(
                kind=art.kind,
                schema_version=attrs.get("schema_version"),
                spec=attrs.get("spec"),
                inputs=attrs.get("inputs"),
                versions=attrs.get("versions"),
            )
        else:
            meta = read_checkpoint(path).get("meta", {})
            row.update(
                kind=meta.get("kind", "checkpoint"),
                schema_version=meta.get("schema_version"),
                spec=canonical_json(meta.get("spec", {})),
                inputs=canonical_json(meta.get("inputs", {})),
                versions=canonical_json(meta.get("versions", {})),
            )
    except ArtifactError as exc:
        row.update(kind="unreadable", error=str(exc))
    return row


def catalog(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per artifact (``*.h5``, ``*.pt``) under ``results_dir``, with its provenance."""
    root = Path(results_dir)
    files = sorted(
        p
        for suffix in ("*.h5", "*.pt")
        for p in root.rglob(suffix)
        if p.is_file() and _TMP_MARK not in p.name
    )
    frame = pd.DataFrame([_row(p, root) for p in files], columns=CATALOG_COLUMNS)
    return frame.sort_values("path", ignore_index=True)


def write_catalog(results_dir: str | os.PathLike, out_csv: str | os.PathLike) -> pd.DataFrame:
    """Writes :func:`catalog` as CSV, atomically."""
    frame = catalog(results_dir)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    return frame
