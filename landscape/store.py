"""The artifact store: HDF5 files with provenance, atomic writes, a reader API and a catalog.

Every HDF5 artifact carries root attributes ``schema_version``, ``kind``, ``spec`` (canonical JSON
of the config block that made it), ``inputs`` (canonical JSON of ``{name: {path, sha256}}``) and
``versions``. Grids are datasets with attached HDF5 dimension scales (``lambda``, or ``x`` and
``y``), one dataset per split and metric (``test/loss``, ``train/error``, ...), each also
soft-linked at the root under its netCDF name (``test_loss``), so that
``xarray.open_dataset(path, engine="h5netcdf")`` shows it with named dimensions and coordinates
(:meth:`Artifact.to_xarray` gives the same Dataset). Values are stored
as they came: NaN marks a point never computed and inf stays inf. Files are written under a
temporary sibling name and renamed into place only when complete, so a killed job never leaves a
half-written file under the final name. Readers return plain numpy and pandas objects.

Checkpoints are PyTorch ``.pt`` files holding ``{"model": state_dict, "meta": {...}}`` (and maybe
``"optimizer"``), read with ``torch.load(weights_only=True)``.

Every artifact is built in memory and its bytes written in one go, so the same content gives the
same bytes (checkpoints included, whatever the temporary file name) and a full disk fails with one
:class:`DiskFullError` naming the file instead of errors from deep inside HDF5 or torch.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import glob
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import pickle
import platform
import re
import secrets
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

if TYPE_CHECKING:  # pandas is imported where a table is built: jobs that only write skip it
    import pandas as pd
    import xarray as xr

SCHEMA_VERSION: int = 1

_TMP_MARK = ".tmp-"
_CHUNK = 1 << 20
_LOCKING: bool | None = None
_ORDER_ATTR = "order"

CATALOG_COLUMNS = [
    "path",
    "kind",
    "schema_version",
    "spec",
    "inputs",
    "size_bytes",
    "sha256",
    "versions",
    "dataset",
    "model",
    "run",
    "epoch",
    "name",
    "error",
    "stale",
]


class ArtifactError(ValueError):
    """An artifact that cannot be read (truncated, corrupt, foreign) or made; names the file."""


class DiskFullError(OSError):
    """The disk (or quota) filled up while an artifact was written; names the file.

    Nothing was written under the final name and the temporary file was removed. ``errno`` is
    ``ENOSPC``, ``filename`` the final path.
    """

    def __init__(self, message: str, filename: str | os.PathLike) -> None:
        super().__init__(errno.ENOSPC, message, os.fspath(filename))

    def __str__(self) -> str:
        return str(self.strerror)


# ----------------------------------------------------------------------------- canonical JSON


def _plain(obj: Any, where: str) -> Any:
    """Converts ``obj`` to plain JSON types; ``where`` is its key path for error messages."""
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(key, np.generic):
                key = key.item()
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise TypeError(
                    f"canonical_json: key {key!r} at {where or '<root>'} is a "
                    f"{type(key).__name__}, not a str"
                )
            out[str(key)] = _plain(value, f"{where}.{key}" if where else str(key))
        return out
    if isinstance(obj, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return _plain(obj.item(), where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"canonical_json: {where or '<root>'} is {obj}, not valid JSON")
        return obj
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    raise TypeError(
        f"canonical_json: {where or '<root>'} has unsupported type {type(obj).__name__}"
    )


def canonical_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, tuples as lists, NaN and inf rejected.

    Numpy scalars and arrays become Python values and lists, paths become strings.

    Args:
        obj: a nest of mappings, sequences and scalars.

    Returns:
        The JSON text; equal inputs give identical text whatever their key order.

    Raises:
        TypeError: for a value of another type, naming its key path (e.g. ``model.hidden[1]``).
        ValueError: for NaN or inf, naming its key path.

    >>> canonical_json({"b": (1, 2), "a": {"y": None, "x": 1.5}})
    '{"a":{"x":1.5,"y":null},"b":[1,2]}'
    """
    return json.dumps(_plain(obj, ""), sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        The 64-character lowercase hex digest.
    """
    digest = hashlib.sha256()
    with builtins.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_version() -> str:
    """``torch.__version__`` (with its build tag, e.g. ``+cu130``), read without importing torch.

    A job that never needs torch (a history export, a plot) should not pay its import.
    """
    if "torch" in sys.modules:
        return str(sys.modules["torch"].__version__)
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin is not None:
        version_file = Path(spec.origin).with_name("version.py")
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M)
        if found:
            return found.group(1)
    return importlib.metadata.version("torch")


def versions() -> dict[str, str]:
    """Versions of this library and of the packages that shape its numbers.

    Returns:
        ``{"landscape", "torch", "numpy", "h5py", "python"}`` mapped to version strings.
    """
    from landscape import __version__

    return {
        "landscape": str(__version__),
        "torch": _torch_version(),
        "numpy": str(np.__version__),
        "h5py": str(h5py.__version__),
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- atomic writes


def set_file_locking(enabled: bool | None) -> None:
    """Switches HDF5 file locking on or off for every file this module opens.

    Args:
        enabled: ``False`` to switch locking off (e.g. on NFS), ``True`` to force it on, ``None``
            for the HDF5 default, which follows the ``HDF5_USE_FILE_LOCKING`` environment
            variable. HDF5 itself lets that variable override this setting when it is set.
    """
    global _LOCKING
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_file_locking: expected a bool or None, got {enabled!r}")
    _LOCKING = enabled


def _h5file(path: str | os.PathLike, mode: str, **kwargs: Any) -> h5py.File:
    if _LOCKING is None:
        return h5py.File(path, mode, **kwargs)
    return h5py.File(path, mode, locking=_LOCKING, **kwargs)


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and _TMP_MARK in name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` and renames it to ``path`` once the block succeeds.

    The temporary name is ``.{name}.tmp-{pid}-{random}{suffix}`` in the same directory (so the
    rename is atomic and the suffix still tells savers the format). Parent directories are
    created. On success the file is fsynced and ``os.replace``-d onto ``path``; on an exception
    the temporary file is removed, the exception re-raised and an existing ``path`` is left
    untouched. A writer killed with SIGKILL cannot remove its temporary file, so a successful
    write also removes temporaries of ``path`` left by processes no longer alive on this host.

    Args:
        path: the final file name.

    Yields:
        The temporary path to write to.

    Raises:
        ArtifactError: if the block finished without writing the temporary file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(
        f".{final.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{final.suffix}"
    )
    try:
        try:
            yield tmp
            if not tmp.is_file():
                raise ArtifactError(
                    f"{final}: nothing was written to the temporary file {tmp.name}"
                )
            _fsync(tmp)
            os.replace(tmp, final)
        except (OSError, RuntimeError) as exc:
            if not _is_disk_full(exc):
                raise
            raise _disk_full(final, tmp, exc) from None
        with contextlib.suppress(OSError):  # make the rename itself durable, where supported
            _fsync(final.parent)
        _remove_stale_temporaries(final)
    finally:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            tmp.unlink()


_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def _is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from says the disk or quota is full.

    Python's own writes raise ``OSError`` with ``errno`` ENOSPC; HDF5 and torch wrap the C error
    in their own exceptions, whose text still holds ``strerror(ENOSPC)``.
    """
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
            return True
        if any(text in str(exc) for text in _NO_SPACE_TEXTS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _disk_full(final: Path, tmp: Path, exc: BaseException) -> DiskFullError:
    cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DiskFullError(
        f"disk full while writing {final} (temporary {tmp}, removed): {cause}",
        final,
    )


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Raises:
        DiskFullError: if the disk fills up; ``path`` is then left as it was.
    """
    with atomic_path(path) as tmp, builtins.open(tmp, "xb") as f:
        f.write(data)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Writes a table as CSV without its index, atomically, and returns it."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def write_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Saves a checkpoint dict with ``torch.save``, atomically, as bytes independent of ``path``.

    ``torch.save`` to a file name records that name in the archive; saving to memory first makes
    the bytes (and so the SHA-256 that later artifacts record) depend only on the content.

    Raises:
        DiskFullError: if the disk fills up; ``path`` is then left as it was.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    write_bytes(path, buffer.getvalue())


def _remove_stale_temporaries(final: Path) -> None:
    """Removes ``.{name}.tmp-{pid}-...`` siblings of ``final`` whose writer process is gone."""
    pattern = re.compile(re.escape(f".{final.name}{_TMP_MARK}") + r"(\d+)-")
    for sibling in final.parent.glob(f".{glob.escape(final.name)}{_TMP_MARK}*"):
        match = pattern.match(sibling.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            sibling.unlink()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# ----------------------------------------------------------------------------- HDF5 writer


def _attr_value(key: str, value: Any) -> Any:
    """An attribute value h5py can store: mappings become canonical JSON, paths strings."""
    if isinstance(value, Mapping):
        return canonical_json(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None:
        raise TypeError(f"attribute {key!r}: None cannot be stored in HDF5")
    return value


def _set_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any] | None) -> None:
    for key, value in (attrs or {}).items():
        obj.attrs[key] = _attr_value(key, value)


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.dtype.kind == "U":  # HDF5 stores text as variable-length UTF-8
        values = values.astype(h5py.string_dtype())
    return values


class Writer:
    """Writes dimension scales, datasets and tensors into one artifact being created.

    Attributes:
        file: the open ``h5py.File`` (a temporary name), for special cases.
    """

    def __init__(self, file: h5py.File):
        self.file = file

    def scale(self, name: str, values: Any) -> h5py.Dataset:
        """A 1-D coordinate dataset at the root, made an HDF5 dimension scale named ``name``.

        Args:
            name: the scale's name, e.g. ``"lambda"``, ``"x"``, ``"y"``.
            values: its coordinates.

        Returns:
            The dataset.

        Raises:
            ValueError: if ``values`` is not 1-D.
        """
        values = _as_array(values)
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
        """A dataset (``name`` may contain ``/`` for groups) with its axes attached to scales.

        Values are stored with their dtype as given: NaN and inf survive bit for bit.

        Args:
            name: e.g. ``"test/loss"``.
            values: an array (numpy, torch or nested lists).
            dims: one scale name per axis (made with :meth:`scale`), or None.
            attrs: attributes of the dataset.

        Returns:
            The dataset.

        Raises:
            ValueError: if ``dims`` has the wrong length, names a missing scale, or an axis length
                differs from its scale's (the message names dataset and axis).
        """
        values = _as_array(values)
        if dims is not None:
            dims = tuple(dims)
            if len(dims) != values.ndim:
                raise ValueError(
                    f"dataset {name!r}: {len(dims)} dims {list(dims)} for an array of "
                    f"{values.ndim} axes (shape {values.shape})"
                )
            for axis, dim in enumerate(dims):
                scale = self.file.get(dim)
                if not isinstance(scale, h5py.Dataset) or not scale.is_scale:
                    raise ValueError(
                        f"dataset {name!r}: axis {axis} names {dim!r}, which is not a scale"
                    )
                if scale.shape[0] != values.shape[axis]:
                    raise ValueError(
                        f"dataset {name!r}: axis {axis} has length {values.shape[axis]} but "
                        f"scale {dim!r} has {scale.shape[0]}"
                    )
        ds = self.file.create_dataset(name, data=values)
        for axis, dim in enumerate(dims or ()):
            ds.dims[axis].attach_scale(self.file[dim])
            ds.dims[axis].label = dim
        _set_attrs(ds, attrs)
        return ds

    def put_tensors(self, group: str, tensors: Mapping[str, Any]) -> None:
        """One dataset per named tensor under ``group``, remembering the given order.

        HDF5 lists names sorted, so the order is kept as a JSON list in the group's ``order``
        attribute (extended if the group already holds tensors).

        Args:
            group: e.g. ``"params"``.
            tensors: parameter name (dots allowed, e.g. ``"features.0.weight"``) to a torch
                tensor or numpy array.

        Raises:
            ValueError: for an empty name or one containing ``/``, before anything is written.
        """
        for key in tensors:
            if not isinstance(key, str) or not key or "/" in key or key in (".", ".."):
                raise ValueError(
                    f"tensor group {group!r}: name {key!r} must be a non-empty str without '/'"
                )
        g = self.file.require_group(group)
        order = json.loads(_attr(g.attrs[_ORDER_ATTR])) if _ORDER_ATTR in g.attrs else []
        for key, value in tensors.items():
            g.create_dataset(key, data=_as_array(value))
            order.append(key)
        g.attrs[_ORDER_ATTR] = json.dumps(order)


@contextlib.contextmanager
def create(
    path: str | os.PathLike,
    kind: str,
    spec: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Iterator[Writer]:
    """Creates an HDF5 artifact atomically, with its provenance attributes.

    The root attributes are ``schema_version``, ``kind``, ``spec`` (canonical JSON), ``inputs``
    (canonical JSON of ``{name: {"path", "sha256"}}``), ``versions`` (canonical JSON) and the
    extra ``attrs`` (mappings are stored as canonical JSON). Nothing time-dependent is stored, so
    the same content written twice gives the same bytes. The file is built in memory and appears
    under ``path`` only when the block finishes without an exception.

    Args:
        path: the final ``.h5`` path.
        kind: the artifact kind, e.g. ``"curve"``, ``"direction"``, ``"history"``.
        spec: the config block that made it.
        inputs: input name to file path, each file hashed now; or to the ``{"path", "sha256"}``
            another artifact recorded for a file read earlier (a merged surface copies those of
            its shards), kept as it is.
        attrs: extra root attributes (scalars, strings, arrays).

    Yields:
        A :class:`Writer`.

    Raises:
        ArtifactError: if an input file does not exist (naming it).
        DiskFullError: if the disk fills up while the file is written.
    """
    provenance = {name: _provenance(path, name, p) for name, p in (inputs or {}).items()}
    spec_json = canonical_json(spec)
    with atomic_path(path) as tmp:
        with _h5file(tmp, "w", driver="core", backing_store=False) as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["kind"] = kind
            f.attrs["spec"] = spec_json
            f.attrs["inputs"] = canonical_json(provenance)
            f.attrs["versions"] = canonical_json(versions())
            _set_attrs(f, attrs)
            yield Writer(f)
            _link_grids_at_root(f, path)
            f.flush()
            image = f.id.get_file_image()
        with builtins.open(tmp, "xb") as out:
            out.write(image)


def netcdf_name(name: str) -> str:
    """The root-level name a grid dataset has for netCDF readers: its path with ``_`` for ``/``.

    >>> netcdf_name("test/loss"), netcdf_name("analysis/test/loss/stationary"), netcdf_name("x")
    ('test_loss', 'analysis_test_loss_stationary', 'x')
    """
    return name.replace("/", "_")


def _is_grid(obj: h5py.Dataset) -> bool:
    """Whether a dataset has at least one axis and a dimension scale attached to every axis."""
    return obj.ndim > 0 and not obj.is_scale and all(len(obj.dims[i]) for i in range(obj.ndim))


def _link_grids_at_root(f: h5py.File, path: str | os.PathLike) -> None:
    """Soft-links every grid dataset inside a group at the root under its :func:`netcdf_name`.

    netCDF readers (``xarray.open_dataset(path, engine="h5netcdf")``) show the root group's
    variables: with these links they see ``test_loss(x, y)`` next to the ``x`` and ``y``
    coordinates. A soft link is a second name, not a copy; :func:`open` follows only the real
    names, so the store's own datasets stay as they were.

    Raises:
        ArtifactError: if a link name is already taken at the root, naming both datasets.
    """
    grids: list[str] = []

    def find(name: str, obj: Any) -> None:
        if "/" in name and isinstance(obj, h5py.Dataset) and _is_grid(obj):
            grids.append(name)

    f.visititems(find)
    for name in grids:
        flat = netcdf_name(name)
        if flat in f:
            raise ArtifactError(
                f"{path}: dataset {name!r} cannot be linked as {flat!r} for netCDF readers: "
                f"{flat!r} already exists at the root"
            )
        f[flat] = h5py.SoftLink(f"/{name}")


def _provenance(
    artifact: str | os.PathLike, name: str, source: str | os.PathLike | Mapping[str, Any]
) -> dict[str, str]:
    """``{"path", "sha256"}`` of one input: a file hashed now or a record copied as it is."""
    if isinstance(source, Mapping):
        if not isinstance(source.get("path"), str) or not re.fullmatch(
            r"[0-9a-f]{64}", str(source.get("sha256"))
        ):
            raise ArtifactError(
                f"{artifact}: input {name!r} record {dict(source)!r} is not "
                "{'path': str, 'sha256': 64 hex digits}"
            )
        return {"path": source["path"], "sha256": source["sha256"]}
    if not Path(source).is_file():
        raise ArtifactError(f"{artifact}: input {name!r} file {os.fspath(source)} does not exist")
    return {"path": os.fspath(source), "sha256": sha256_file(source)}


# ----------------------------------------------------------------------------- reader


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [_attr(v) for v in value.tolist()]
    return value


@dataclass
class Artifact:
    """An HDF5 artifact read into memory (the file is closed).

    Attributes:
        path: the file.
        kind: its ``kind`` attribute.
        spec: its ``spec``, parsed.
        inputs: its ``inputs``, parsed: ``{name: {"path", "sha256"}}``.
        attrs: all root attributes (JSON ones as strings), numpy scalars as Python values.
        data: every dataset outside tensor groups, by full name (``"test/loss"``, ``"lambda"``).
        dims: dataset name to the names of the scales attached to each axis (``""`` if none).
        tensor_groups: tensor group name to its tensors in stored order (see :meth:`tensors`).
        data_attrs: dataset name to its attributes, without HDF5's dimension-scale bookkeeping.
    """

    path: Path
    kind: str
    spec: dict
    inputs: dict
    attrs: dict
    data: dict[str, np.ndarray]
    dims: dict[str, tuple[str, ...]]
    tensor_groups: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    data_attrs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __contains__(self, name: object) -> bool:
        return name in self.data

    def tensors(self, group: str = "params") -> dict[str, np.ndarray]:
        """The named tensors stored under ``group`` by :meth:`Writer.put_tensors`, in order.

        Raises:
            KeyError: if the artifact has no such tensor group.
        """
        try:
            return dict(self.tensor_groups[group])
        except KeyError:
            raise KeyError(
                f"{self.path}: no tensor group {group!r} (has {sorted(self.tensor_groups)})"
            ) from None

    def unflatten(self, flat: Any) -> dict[str, np.ndarray]:
        """A flat vector over the tensors of the ``names`` and ``shapes`` (JSON) attributes, cut
        into those tensors in that order (e.g. a row of a spectrum's ``LA/eigenvectors``).

        Raises:
            ValueError: if the artifact lacks those attributes or ``flat`` has another length.
        """
        if "names" not in self.attrs or "shapes" not in self.attrs:
            raise ValueError(f"{self.path}: no 'names' and 'shapes' attributes to unflatten by")
        shapes = [tuple(s) for s in json.loads(self.attrs["shapes"])]
        sizes = [math.prod(s) for s in shapes]
        flat = np.asarray(flat).reshape(-1)
        if flat.size != sum(sizes):
            raise ValueError(
                f"{self.path}: a vector of {flat.size} elements, the tensors hold {sum(sizes)}"
            )
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        return {
            str(n): p.reshape(s) for n, p, s in zip(self.attrs["names"], parts, shapes, strict=True)
        }

    @property
    def scales(self) -> list[str]:
        """Names of the datasets used as dimension scales."""
        return sorted({d for dims in self.dims.values() for d in dims if d})

    def frame(self, names: Sequence[str] | None = None) -> pd.DataFrame:
        """A wide table of datasets sharing one set of dims, indexed by their scales.

        Args:
            names: the datasets (columns); by default every dataset with the dims of the first
                non-scale dataset that has dims.

        Returns:
            For 1-D data an index named after the scale (e.g. ``lambda``); for 2-D a
            ``MultiIndex`` ``(x, y)`` in C order, so row ``i * len(y) + j`` is ``(x[i], y[j])``
            and holds ``data[name][i, j]``.

        Raises:
            ValueError: if there is no such dataset or the datasets do not share dims.
        """
        import pandas as pd

        scales = set(self.scales)
        if names is None:
            gridded = [n for n, d in self.dims.items() if n not in scales and d and all(d)]
            if not gridded:
                raise ValueError(f"{self.path}: no dataset with dimension scales")
            names = [n for n in gridded if self.dims[n] == self.dims[gridded[0]]]
        names = list(names)
        if not names:
            raise ValueError(f"{self.path}: frame() needs at least one dataset")
        for n in names:
            if n not in self.data:
                raise ValueError(f"{self.path}: no dataset {n!r}")
        dims = self.dims[names[0]]
        if not dims or not all(dims):
            raise ValueError(f"{self.path}: dataset {names[0]!r} has no scale on every axis")
        for n in names:
            if self.dims[n] != dims:
                raise ValueError(f"{self.path}: dataset {n!r} has dims {self.dims[n]}, not {dims}")
        if len(dims) == 1:
            index: pd.Index = pd.Index(self.data[dims[0]], name=dims[0])
        else:
            index = pd.MultiIndex.from_product([self.data[d] for d in dims], names=list(dims))
        return pd.DataFrame({n: self.data[n].reshape(-1) for n in names}, index=index)

    def to_xarray(self) -> xr.Dataset:
        """The artifact as the ``xarray.Dataset`` that ``xarray.open_dataset(path,
        engine="h5netcdf")`` reads from its file (loaded, the file closed).

        Dimension scales become dimension coordinates (``lambda``, or ``x`` and ``y``). Every
        other dataset with a scale on each axis becomes a data variable named by
        :func:`netcdf_name` (``test/loss`` -> ``test_loss``), as the file links it at its root;
        root datasets keep their names. Datasets in groups without a scale on each axis (a
        curve's ``analysis/*/type`` and other scalars, tensor groups) are left out: they are in
        :attr:`data`, and ``xarray.open_datatree`` shows them group by group. The root attributes
        (``kind``, ``spec``, ``inputs`` and ``versions`` as JSON text, ...) are the Dataset's.

        Raises:
            ImportError: if xarray is not installed (it is in the ``xarray`` and ``test`` extras).
            ArtifactError: for a root dataset with an axis without a scale, which netCDF cannot
                name, or two datasets with the same :func:`netcdf_name`.
        """
        try:
            import xarray as xr
        except ImportError as exc:
            raise ImportError(
                "Artifact.to_xarray needs xarray: pip install xarray h5netcdf, or install this "
                "package with its 'xarray' extra (pip install -e '.[xarray]'; the 'test' extra "
                "includes it)"
            ) from exc
        scales = set(self.scales)
        coords = {
            name: xr.Variable((name,), self.data[name], self._netcdf_attrs(name))
            for name in sorted(scales)
        }
        variables: dict[str, xr.Variable] = {}
        for name in sorted(self.data):
            dims = self.dims[name]
            if name in scales or ("/" in name and not (dims and all(dims))):
                continue
            if not all(dims):
                raise ArtifactError(
                    f"{self.path}: dataset {name!r} has no dimension scale on axis "
                    f"{dims.index('')}, so netCDF readers cannot name that dimension"
                )
            flat = netcdf_name(name)
            if flat in variables or flat in coords:
                raise ArtifactError(f"{self.path}: two datasets are named {flat!r} for netCDF")
            variables[flat] = xr.Variable(dims, self.data[name], self._netcdf_attrs(name))
        return xr.Dataset(variables, coords=coords, attrs=_netcdf_attrs(self.attrs))

    def _netcdf_attrs(self, name: str) -> dict[str, Any]:
        return _netcdf_attrs(self.data_attrs.get(name, {}))


def _netcdf_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as netCDF readers give them: a one-element list or array is its element."""
    return {
        k: v[0] if isinstance(v, list | np.ndarray) and np.ndim(v) == 1 and len(v) == 1 else v
        for k, v in attrs.items()
    }


# Attributes HDF5 dimension scales and netCDF-4 keep for themselves (h5netcdf hides the same).
_SCALE_ATTRS = frozenset(
    {
        "CLASS",
        "NAME",
        "REFERENCE_LIST",
        "DIMENSION_LIST",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_nc3_strict",
        "_NCProperties",
    }
)


def _read_h5(path: Path, *, with_data: bool) -> tuple[dict, dict, dict, dict, dict]:
    """Root attrs, data, dims, tensor groups and dataset attrs of an HDF5 file (errors left to
    the caller)."""
    data: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[str, ...]] = {}
    groups: dict[str, dict[str, np.ndarray]] = {}
    data_attrs: dict[str, dict[str, Any]] = {}
    with _h5file(path, "r") as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if not with_data:
            return attrs, data, dims, groups, data_attrs
        tensor_groups: list[str] = []

        def find(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group) and _ORDER_ATTR in obj.attrs:
                tensor_groups.append(name)

        f.visititems(find)
        for name in tensor_groups:
            g = f[name]
            groups[name] = {k: g[k][()] for k in json.loads(_attr(g.attrs[_ORDER_ATTR]))}

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset):
                return
            if any(name.startswith(g + "/") for g in tensor_groups):
                return
            data[name] = obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) else obj[()]
            dims[name] = tuple(
                obj.dims[i][0].name.lstrip("/") if len(obj.dims[i]) else "" for i in range(obj.ndim)
            )
            data_attrs[name] = {k: _attr(v) for k, v in obj.attrs.items() if k not in _SCALE_ATTRS}

        f.visititems(visit)
    return attrs, data, dims, groups, data_attrs


def _json_attr(path: Path, attrs: Mapping[str, Any], key: str) -> Any:
    try:
        return json.loads(attrs.get(key, "{}"))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: attribute {key!r} is not valid JSON ({exc})") from exc


def open(path: str | os.PathLike) -> Artifact:
    """Reads a whole HDF5 artifact into memory and closes the file.

    Args:
        path: the ``.h5`` file.

    Returns:
        The :class:`Artifact`.

    Raises:
        FileNotFoundError: if there is no such file.
        ArtifactError: for a truncated, corrupt or non-HDF5 file, or one without the store's
            provenance attributes; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such artifact")
    try:
        attrs, data, dims, groups, data_attrs = _read_h5(path, with_data=True)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 artifact ({exc})") from exc
    if "kind" not in attrs or "schema_version" not in attrs:
        raise ArtifactError(f"{path}: HDF5 file without the store's provenance attributes")
    return Artifact(
        path=path,
        kind=str(attrs["kind"]),
        spec=_json_attr(path, attrs, "spec"),
        inputs=_json_attr(path, attrs, "inputs"),
        attrs=attrs,
        data=data,
        dims=dims,
        tensor_groups=groups,
        data_attrs=data_attrs,
    )


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a checkpoint on the CPU with ``torch.load(weights_only=True)``.

    Args:
        path: the ``.pt`` file.

    Returns:
        The checkpoint dict (``"model"``, ``"meta"``, maybe ``"optimizer"``).

    Raises:
        FileNotFoundError: if there is no such file.
        ArtifactError: for a truncated, corrupt or foreign file (not a dict); names the file.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise ArtifactError(
            f"{path}: refused to load a checkpoint holding objects other than tensors and plain "
            f"containers{what}; checkpoints are read with torch.load(weights_only=True), "
            "which never runs code stored in the file"
        ) from exc
    except Exception as exc:  # zipfile/EOF/OSError/RuntimeError vary by torch version
        raise ArtifactError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({exc})"
        ) from exc
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: checkpoint holds a {type(state).__name__}, not a dict")
    return state


class _MetaUnpickler(pickle.Unpickler):
    """Reads a checkpoint's pickle without torch: every tensor and foreign object becomes None.

    Only ``OrderedDict`` (a state dict's type) is ever looked up; nothing stored runs code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        return _opaque

    def persistent_load(self, pid: Any) -> None:
        return None


def _opaque(*args: Any, **kwargs: Any) -> None:
    return None


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of an HDF5 artifact (``spec`` and ``inputs`` as JSON), no datasets.

    Raises:
        FileNotFoundError: if there is no such file.
        ArtifactError: for a file that is not a readable HDF5 artifact; names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such artifact")
    try:
        attrs = _read_h5(path, with_data=False)[0]
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 artifact ({exc})") from exc
    if "kind" not in attrs:
        raise ArtifactError(f"{path}: HDF5 file without the store's provenance")
    return attrs


def checkpoint_meta(path: str | os.PathLike) -> dict:
    """The ``meta`` dict of a checkpoint, read without torch and without reading its tensors.

    For deciding, while Snakemake builds its DAG, what an existing checkpoint was made from.

    Raises:
        FileNotFoundError: if there is no such file.
        ArtifactError: if it is not a checkpoint archive with a ``meta`` dict; names the file.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ArtifactError(f"{path}: no single data.pkl in the checkpoint archive")
            with archive.open(pickles[0]) as f:
                state = _MetaUnpickler(f).load()
    except (FileNotFoundError, ArtifactError):
        raise
    except Exception as exc:  # zip, pickle and whatever a foreign pickle's opcodes raise
        raise ArtifactError(f"{path}: not a readable checkpoint ({exc})") from exc
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: checkpoint without a 'meta' dict")
    return meta


def kept_previous(
    out: str | os.PathLike,
    spec: Mapping[str, Any],
    epoch: int,
    earlier: Mapping[int, str],
) -> str | None:
    """The earlier checkpoint an existing checkpoint was trained from, while it can stay its input.

    Training resumes exactly (the weights at an epoch do not depend on the checkpoint training
    continued from), so an existing checkpoint made with the same run spec from a checkpoint that
    is still kept, and not newer than it, may keep that input: a checkpoint added in between
    (``checkpoints: [0, 10, 30]`` -> ``[0, 5, 10, 30]``) then retrains nothing that exists.

    Args:
        out: the checkpoint about to be (re)made; it may not exist.
        spec: the run spec it is made with (as in its ``meta["spec"]``).
        epoch: its epoch.
        earlier: epoch to path of the run's checkpoints kept before ``epoch``, as the workflow
            names them.

    Returns:
        The path in ``earlier`` that ``out`` records as ``inputs.previous``, or None (``out``
        is missing, unreadable, made with another spec, from a checkpoint no longer kept, or
        older than that checkpoint): then training continues from the nearest earlier one.
    """
    out = Path(out)
    if not out.is_file():
        return None
    try:
        meta = checkpoint_meta(out)
        same_spec = canonical_json(meta.get("spec")) == canonical_json(spec)
    except (ArtifactError, OSError, TypeError, ValueError):
        return None
    inputs = meta.get("inputs")
    recorded = inputs.get("previous") if isinstance(inputs, dict) else None
    if not same_spec or meta.get("epoch") != epoch or not isinstance(recorded, dict):
        return None
    by_path = {os.path.normpath(p): p for e, p in earlier.items() if e < epoch}
    previous = by_path.get(os.path.normpath(str(recorded.get("path"))))
    if previous is None or not Path(previous).is_file():
        return None
    if Path(previous).stat().st_mtime_ns > out.stat().st_mtime_ns:
        return None
    return previous


# ----------------------------------------------------------------------------- catalog

_EPOCH = re.compile(r"^epoch(\d+)$")


# Folders under results/ that hold artifacts of several runs, not ``{dataset}/{model}/{run}``.
_CROSS_RUN = frozenset({"federated", "pairs", "mode_connect", "tables", "figures"})


def _path_parts(rel: Path) -> dict[str, Any]:
    """``results/{dataset}/{model}/{run}/.../name`` parts of a relative artifact path.

    >>> _path_parts(Path("digits/mlp/mlp/curves/epoch30/c.h5"))["run"]
    'mlp'
    >>> _path_parts(Path("federated/digits/alpha1.0/fedavg/seed0.h5"))["run"] is None
    True
    """
    parts = rel.parts
    layout = len(parts) >= 4 and parts[0] not in _CROSS_RUN
    epoch = None
    for part in (*parts[:-1], rel.stem):
        m = _EPOCH.match(part)
        if m:
            epoch = int(m.group(1))
    return {
        "dataset": parts[0] if layout else None,
        "model": parts[1] if layout else None,
        "run": parts[2] if layout else None,
        "epoch": epoch,
        "name": rel.stem,
    }


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _row(path: Path, root: Path) -> dict[str, Any]:
    rel = path.relative_to(root)
    row: dict[str, Any] = {"path": rel.as_posix(), **_path_parts(rel), "error": ""}
    try:
        row["size_bytes"] = path.stat().st_size
        row["sha256"] = sha256_file(path)
        if path.suffix == ".h5":
            attrs = read_attrs(path)
        else:
            meta = read_checkpoint(path).get("meta")
            if not isinstance(meta, Mapping):
                raise ArtifactError(f"{path}: checkpoint without a 'meta' dict")
            attrs = dict(meta)
            attrs.setdefault("kind", "checkpoint")
        row.update(
            kind=str(attrs["kind"]),
            schema_version=attrs.get("schema_version"),
            spec=_json_text(attrs.get("spec", {})),
            inputs=_json_text(attrs.get("inputs", {})),
            versions=_json_text(attrs.get("versions", {})),
        )
    except (ArtifactError, OSError, TypeError, ValueError) as exc:
        row.update(kind="unreadable", error=str(exc))
    return row


def catalog(results_dir: str | os.PathLike, base: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per artifact (``*.h5`` and ``*.pt``, recursively) under ``results_dir``.

    Temporary files of unfinished writes (``.{name}.tmp-...``) are skipped. A file that cannot
    be read gets kind ``"unreadable"`` and a message in ``error`` instead of failing the catalog.
    An artifact is ``stale`` when an input it records is missing or no longer has the recorded
    SHA-256 (it was made from files that have changed since, e.g. a checkpoint retrained after
    ``train.epochs`` changed), or when such an input is itself stale.

    Args:
        results_dir: the results directory.
        base: the directory that relative input paths are relative to: the workflow's working
            directory, by default the parent of ``results_dir``.

    Returns:
        Columns ``path`` (relative, posix), ``kind``, ``schema_version``, ``spec``, ``inputs``
        (JSON text), ``size_bytes``, ``sha256``, ``versions`` (JSON text), the path parts
        ``dataset``, ``model``, ``run`` (for ``{dataset}/{model}/{run}/...`` paths), ``epoch``
        (from an ``epoch{N}`` part), ``name`` (file stem), ``error`` (``""`` if readable) and
        ``stale`` (True, False, or NA for an unreadable file); sorted by ``path``.
    """
    import pandas as pd

    root = Path(results_dir)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix in (".h5", ".pt") and p.is_file() and not _is_temporary(p.name)
    )
    frame = pd.DataFrame([_row(p, root) for p in files], columns=CATALOG_COLUMNS)
    for col in ("schema_version", "size_bytes", "epoch"):
        frame[col] = frame[col].astype("Int64")
    base = root.parent if base is None else Path(base)
    frame["stale"] = pd.array(_stale(frame, root, base), dtype="boolean")
    return frame.sort_values("path", ignore_index=True)


def _recorded_inputs(inputs_json: Any) -> list[tuple[str, str]]:
    """``(path, sha256)`` of every input an artifact records (entries without both are skipped)."""
    try:
        inputs = json.loads(inputs_json)
    except (TypeError, ValueError):
        return []
    if not isinstance(inputs, Mapping):
        return []
    return [
        (record["path"], record["sha256"])
        for record in inputs.values()
        if isinstance(record, Mapping)
        and isinstance(record.get("path"), str)
        and isinstance(record.get("sha256"), str)
    ]


def _stale(frame: pd.DataFrame, root: Path, base: Path) -> list[bool | None]:
    """The ``stale`` column of a catalog: recorded inputs changed or missing, or stale inputs."""

    def resolve(recorded: str) -> Path:
        path = Path(recorded)
        return (path if path.is_absolute() else base / path).resolve()

    rows = {(root / p).resolve(): i for i, p in enumerate(frame["path"])}
    hashes: dict[Path, str | None] = {p: frame["sha256"].iat[i] for p, i in rows.items()}

    def current_sha256(path: Path) -> str | None:
        if path not in hashes:
            hashes[path] = sha256_file(path) if path.is_file() else None
        return hashes[path]

    readable = frame["kind"] != "unreadable"
    inputs = {
        i: [resolve(p) for p, _ in _recorded_inputs(frame["inputs"].iat[i])]
        for i in range(len(frame))
        if readable.iat[i]
    }
    stale = {
        i: any(
            current_sha256(resolve(p)) != sha for p, sha in _recorded_inputs(frame["inputs"].iat[i])
        )
        for i in inputs
    }
    changed = True
    while changed:  # an artifact made from a stale artifact is stale too
        changed = False
        for i, paths in inputs.items():
            if not stale[i] and any(stale.get(rows.get(p, -1), False) for p in paths):
                stale[i] = changed = True
    return [stale.get(i) for i in range(len(frame))]


def write_catalog(results_dir: str | os.PathLike, out_csv: str | os.PathLike) -> pd.DataFrame:
    """Writes :func:`catalog` of ``results_dir`` as CSV to ``out_csv``, atomically.

    Returns:
        The catalog.
    """
    return write_csv(catalog(results_dir), out_csv)
