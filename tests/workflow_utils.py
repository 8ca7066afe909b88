"""Helpers of the workflow tests: run Snakemake in a temporary directory, snapshot and compare."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from landscape import store

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake_command(workdir: Path, *args: str, configfile: Path | None = None) -> list[str]:
    """``python -m snakemake`` on this repository's Snakefile, run in ``workdir``.

    Args:
        workdir: the working directory (results/, logs/ and .snakemake/ go there).
        args: further command-line arguments.
        configfile: a config replacing ``workdir/config.yaml`` (``--replace-workflow-config``).
    """
    cmd = [sys.executable, "-m", "snakemake", *args, "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir)]
    # last: --configfile takes every argument up to the next option
    if configfile is None:
        return [*cmd, "--configfile", str(workdir / "config.yaml")]
    return [*cmd, "--replace-workflow-config", "--configfile", str(configfile)]


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    cores: int = 2,
    lock: bool = False,
    configfile: Path | None = None,
) -> subprocess.CompletedProcess:
    """Runs the workflow in ``workdir`` and waits; raises with its stderr if ``check`` and it fails.

    ``lock=False`` passes ``--nolock`` (the tests never share a directory between two runs).
    """
    extra = ["--cores", str(cores), *([] if lock else ["--nolock"]), *args]
    cmd = snakemake_command(workdir, *extra, configfile=configfile)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def completed_run(directory: Path, config: Path) -> Path:
    """``directory`` with ``config`` as its config.yaml, after one complete run of the workflow."""
    shutil.copy(config, directory / "config.yaml")
    snakemake(directory)
    return directory


def snapshot(workdir: Path) -> dict[str, int]:
    """Modification time (ns) of every file under ``workdir/results``, by relative path."""
    results = workdir / "results"
    return {
        p.relative_to(results).as_posix(): p.stat().st_mtime_ns
        for p in results.rglob("*")
        if p.is_file()
    }


def fingerprint(directory: Path) -> dict[str, tuple[int, str]]:
    """``(mtime in ns, SHA-256)`` of every file under ``directory``, by relative path."""
    return {
        p.relative_to(directory).as_posix(): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def changed(before: dict, after: dict) -> set[str]:
    """Paths that are new in ``after`` or differ from ``before``."""
    return {p for p, t in after.items() if before.get(p) != t}


def edit_config(workdir: Path, edit: Callable[[dict], object]) -> None:
    """Applies ``edit`` to the parsed ``workdir/config.yaml`` and writes it back."""
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))


def artifacts(results: Path) -> list[Path]:
    """Relative paths of every checkpoint and HDF5 artifact under ``results``, sorted."""
    return sorted(p.relative_to(results) for p in results.rglob("*") if p.suffix in (".h5", ".pt"))


def assert_same_results(a: Path, b: Path) -> None:
    """Two results directories hold the same artifacts with bitwise-equal tensors and datasets.

    Checkpoints are compared tensor by tensor (``torch.save`` files may differ in bytes), HDF5
    files dataset by dataset, tensor groups included.
    """
    files = artifacts(a)
    assert files, f"no artifacts under {a}"
    assert files == artifacts(b)
    for rel in files:
        if rel.suffix == ".pt":
            x, y = store.read_checkpoint(a / rel)["model"], store.read_checkpoint(b / rel)["model"]
            assert x.keys() == y.keys(), rel
            assert all(torch.equal(x[k], y[k]) for k in x), rel
        else:
            x, y = store.open(a / rel), store.open(b / rel)
            assert x.data.keys() == y.data.keys(), rel
            for name in x.data:
                np.testing.assert_array_equal(x[name], y[name], err_msg=f"{rel}:{name}")
            assert x.tensor_groups.keys() == y.tensor_groups.keys(), rel
            for group, tensors in x.tensor_groups.items():
                assert tensors.keys() == y.tensor_groups[group].keys(), rel
                for name, values in tensors.items():
                    other = y.tensor_groups[group][name]
                    np.testing.assert_array_equal(values, other, err_msg=f"{rel}:{group}/{name}")
