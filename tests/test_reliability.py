"""Reliability (issue 6): bad input, crash recovery, determinism, security, HDF5 file locking.

The workflow tests use `tests/configs/reliability.yaml` (one BN run, one 4x3 surface in two
shards) rather than the tiny config, and ask for the surface only (seven jobs: training, two
directions, two shards, merge), to keep four runs of the workflow within minutes on two cores.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate
from workflow_utils import (
    REPO,
    artifacts,
    assert_same_results,
    edit_config,
    fingerprint,
    snakemake,
    snakemake_command,
)

from landscape import store
from landscape.config import (
    ConfigError,
    check_cost,
    check_files,
    check_finite,
    check_references,
    normalize_numbers,
    schema_error,
)
from landscape.data import DatasetError, load_data
from landscape.train import DivergenceError, train_model

CONFIG = REPO / "tests" / "configs" / "reliability.yaml"
SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
RUN = Path("digits/vgg_bn/vgg_bn")
SHARDS = RUN / "surfaces/epoch1/plane.shards"
SURFACE = f"results/{RUN}/surfaces/epoch1/plane.h5"


def new_workdir(path: Path, edit=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG, path / "config.yaml")
    if edit is not None:
        edit_config(path, edit)
    return path


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A finished run of the reliability config: the reference of the other workflow tests."""
    workdir = new_workdir(tmp_path_factory.mktemp("good"))
    snakemake(workdir, SURFACE)
    return workdir


# --------------------------------------------------------------------------- A. bad input


def _add_curve(name: str, **block):
    return lambda c: c.setdefault("curves", {}).update({name: block})


def _cifar_run(root: str):
    def edit(c):
        c["datasets"]["c10"] = {"source": "cifar10", "root": root}
        c["runs"]["c10_run"] = {"dataset": "c10", "model": "vgg_bn"}

    return edit


# id: (edit of the reliability config, the one message expected on stderr)
BAD_CONFIGS = {
    "unknown_key": (lambda c: c.update(colour="red"), "colour: unknown key"),
    "unknown_nested_key": (
        lambda c: c["runs"]["vgg_bn"]["train"].update(learning_rate=0.1),
        "runs.vgg_bn.train.learning_rate: unknown key",
    ),
    "wrong_type": (
        lambda c: c["runs"]["vgg_bn"]["train"].update(lr="fast"),
        "runs.vgg_bn.train.lr: 'fast' is not of type 'number'",
    ),
    "negative_epochs": (
        lambda c: c["runs"]["vgg_bn"]["train"].update(epochs=-1),
        "runs.vgg_bn.train.epochs: -1 is less than the minimum of 0",
    ),
    "unknown_source": (
        lambda c: c["datasets"]["digits"].update(source="mnist"),
        "datasets.digits.source: 'mnist' is not one of",
    ),
    "run_unknown_dataset": (
        lambda c: c["runs"]["vgg_bn"].update(dataset="imagenet"),
        "runs.vgg_bn.dataset: 'imagenet' is not a key of datasets",
    ),
    "run_unknown_model": (
        lambda c: c["runs"]["vgg_bn"].update(model="resnet"),
        "runs.vgg_bn.model: 'resnet' is not a key of models",
    ),
    "curve_unknown_direction": (
        _add_curve("foo", direction="bar"),
        "curves.foo.direction: 'bar' is not a key of directions",
    ),
    "surface_unknown_direction": (
        lambda c: c["surfaces"]["plane"].update(directions=["gx", "bar"]),
        "surfaces.plane.directions: 'bar' is not a key of directions",
    ),
    "missing_dataset_root": (
        _cifar_run("/nonexistent/cifar"),
        "datasets.c10.root: directory '/nonexistent/cifar' does not exist",
    ),
    "empty_grid": (
        lambda c: c["surfaces"]["plane"]["x"].update(num=0),
        "surfaces.plane.x.num: 0 is less than the minimum of 1",
    ),
    "reversed_range": (
        lambda c: c["surfaces"]["plane"].update(y={"min": 1.0, "max": -1.0, "num": 3}),
        "surfaces.plane.y: min (1.0) must be less than max (-1.0)",
    ),
    "range_as_list": (
        _add_curve("c", direction="gx", **{"lambda": [-1.0, 1.0]}),
        "curves.c.lambda: [-1.0, 1.0] is not of type 'object'",
    ),
    "one_surface_direction": (
        lambda c: c["surfaces"]["plane"].update(directions=["gx"]),
        "surfaces.plane.directions: ['gx'] is too short",
    ),
    "late_checkpoint": (
        lambda c: c["runs"]["vgg_bn"]["train"].update(checkpoints=[0, 5]),
        "runs.vgg_bn.train.checkpoints: epochs [5] exceed",
    ),
    "unsafe_run_name": (
        lambda c: c["runs"].update({"../../etc": c["runs"]["vgg_bn"]}),
        "runs: name '../../etc' is not allowed",
    ),
    "unsafe_reference": (
        _add_curve("c", direction="../x"),
        "curves.c.direction: '../x' does not match",
    ),
    "zero_shards": (lambda c: c.update(surface_shards=0), "surface_shards: 0 is less than"),
    "arch_key_of_another_arch": (
        lambda c: c["models"]["vgg_bn"].update(depth=20),
        "models.vgg_bn.depth: unknown key",
    ),
    "cosine_unknown_direction": (
        lambda c: c.update(cosines={"directions": ["gx", "bar"], "runs": "all"}),
        "cosines.directions: 'bar' is not a key of directions",
    ),
    "cosine_unknown_epoch": (
        lambda c: c.update(cosines={"directions": ["gx"], "runs": "all", "epochs": [7]}),
        "cosines.epochs: run 'vgg_bn' has no checkpoint at epochs [7]",
    ),
    "odd_xtrace_budget": (
        lambda c: c.update(hessian={"trace": {"matvecs": 99}}),
        "hessian.trace.matvecs: xtrace needs an even number of products, got 99",
    ),
    "unknown_hvp_method": (
        lambda c: c.update(hessian={"hvp": "finite_differences"}),
        "hessian.hvp: 'finite_differences' is not one of",
    ),
    "locking_not_a_bool": (
        lambda c: c.update(hdf5_file_locking="no"),
        "hdf5_file_locking: 'no' is not of type 'boolean'",
    ),
    "checkpoint_target_unsaved_epoch": (  # issue 11 item 8: no target.run, epoch 5 not saved
        lambda c: (
            c["directions"].update(d={"kind": "checkpoint", "target": {"epoch": 5}}),
            c.update(curves={"c": {"direction": "d"}}),
        ),
        "directions.d.target.epoch: run 'vgg_bn' has no checkpoint at epoch 5",
    ),
    "nan_lr": (
        lambda c: c["runs"]["vgg_bn"]["train"].update(lr=float("nan")),
        "runs.vgg_bn.train.lr: nan is not a finite number",
    ),
    "inf_lambda": (
        _add_curve("c", direction="gx", **{"lambda": {"min": float("inf"), "max": 1.0}}),
        "curves.c.lambda.min: inf is not a finite number",
    ),
    "huge_surface": (  # 500,000 points x (450 test + 512 BN) examples in each of 2 shards
        lambda c: c["surfaces"]["plane"].update(x={"num": 1000}, y={"num": 1000}),
        "surfaces.plane.x.num and surfaces.plane.y.num: 1000 x 1000 points in 2 shards is "
        "500000 points per job, about 4.8e+08 forward passes",
    ),
}
# The kinds run through Snakemake itself (each costs a start of Snakemake); all are checked below
# in-process, through the same functions rules/common.smk calls.
WORKFLOW_CASES = [
    "unknown_key",
    "wrong_type",
    "negative_epochs",
    "run_unknown_dataset",
    "run_unknown_model",
    "curve_unknown_direction",
    "surface_unknown_direction",
    "missing_dataset_root",
    "empty_grid",
    "reversed_range",
    "range_as_list",
    "unsafe_run_name",
    "checkpoint_target_unsaved_epoch",
    "nan_lr",
]


def config_error(config: dict) -> str | None:
    """The message rules/common.smk stops the workflow with, or None for a good config."""
    try:
        check_finite(config)
    except ConfigError as exc:
        return str(exc)
    error = schema_error(config, SCHEMA)
    if error is not None:
        return error
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))  # fills in defaults
    try:
        normalize_numbers(config, SCHEMA)
        check_references(config)
        check_files(config)
        check_cost(config)
    except ConfigError as exc:
        return str(exc)
    return None


def test_reliability_config_is_good():
    assert config_error(yaml.safe_load(CONFIG.read_text())) is None


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_rejected_naming_the_key(case):
    edit, message = BAD_CONFIGS[case]
    config = yaml.safe_load(CONFIG.read_text())
    edit(config)
    error = config_error(config)
    assert error is not None and message in error, error


@pytest.fixture(scope="module")
def bad_runs(good_run, tmp_path_factory):
    """The workflow cases run on the finished good run's directory, two at a time.

    Returns the finished processes by id, and fingerprints of results/ and logs/ before and after.
    """
    configs = tmp_path_factory.mktemp("bad_configs")
    paths = {}
    for name in WORKFLOW_CASES:
        edit = BAD_CONFIGS[name][0]
        config = yaml.safe_load(CONFIG.read_text())
        edit(config)
        paths[name] = configs / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config))

    def state():
        return {d: fingerprint(good_run / d) for d in ("results", "logs")}

    before = state()
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(
            zip(
                paths,
                pool.map(lambda p: snakemake(good_run, check=False, configfile=p), paths.values()),
                strict=True,
            )
        )
    return procs, before, state()


@pytest.mark.workflow
@pytest.mark.parametrize("case", WORKFLOW_CASES)
def test_bad_config_stops_the_workflow_with_one_message(bad_runs, case):
    proc = bad_runs[0][case]
    message = BAD_CONFIGS[case][1]
    assert proc.returncode != 0
    assert proc.stderr.count(message) == 1, proc.stderr[-3000:]
    assert "ConfigError" in proc.stderr
    assert "Failed validating" not in proc.stderr  # no schema dump
    assert "rule " not in proc.stdout + proc.stderr  # no job was scheduled


@pytest.mark.workflow
def test_bad_configs_change_nothing_already_computed(bad_runs):
    _, before, after = bad_runs
    assert before["results"], "the good run left no results"
    assert after == before


def test_schema_names_unsafe_names_in_every_family():
    base = yaml.safe_load(CONFIG.read_text())
    base["curves"] = {"c": {"direction": "gx"}}
    for family in ("datasets", "models", "runs", "directions", "curves", "surfaces"):
        for bad in ("../../etc", "..", ".hidden", "a/b", "a b", "-x", "_", "x$"):
            config = copy.deepcopy(base)
            config[family][bad] = next(iter(config[family].values()))
            assert schema_error(config, SCHEMA).startswith(f"{family}: name {bad!r} is not allowed")


def test_missing_dataset_root_names_the_key(tmp_path):
    with pytest.raises(DatasetError, match=r"datasets\.c10\.root: directory .* does not exist"):
        load_data({"source": "cifar10", "root": str(tmp_path / "nope")}, key="datasets.c10")


def _checkpoint(path: Path, meta=None) -> Path:
    torch.save({"model": {"w": torch.arange(1000.0)}, "meta": meta or {"epoch": 0}}, path)
    return path


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    path = _checkpoint(tmp_path / "epoch3.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(store.ArtifactError, match=f"{re.escape(str(path))}: not a readable"):
        store.read_checkpoint(path)


def test_truncated_hdf5_error_names_the_file(tmp_path):
    path = tmp_path / "curve.h5"
    with store.create(path, kind="curve", spec={"n": 1}) as w:
        w.scale("lambda", np.linspace(-1, 1, 101))
        w.put("test/loss", np.arange(101.0), dims=("lambda",))
    assert store.open(path).kind == "curve"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(store.ArtifactError, match=f"{re.escape(str(path))}: not a readable HDF5"):
        store.open(path)


def test_divergence_names_run_and_epoch(tmp_path):
    spec = {
        "run": "boom",
        "dataset_name": "digits",
        "dataset": {"source": "digits", "max_train": 256, "max_test": 64},
        "model_name": "mlp",
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 2, "lr": 1e8, "batch_size": 64, "schedule": "constant"},
    }
    train_model(tmp_path / "epoch0.pt", spec, 0, device="cpu")
    with pytest.raises(DivergenceError, match=r"run 'boom': training loss became nan in epoch 1"):
        train_model(tmp_path / "epoch2.pt", spec, 2, previous=tmp_path / "epoch0.pt", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch0.pt"]  # nothing half-written


@pytest.mark.workflow
def test_truncated_checkpoint_stops_the_workflow_naming_the_file(good_run, tmp_path):
    workdir = tmp_path / "wd"
    shutil.copytree(good_run, workdir, symlinks=True)
    checkpoint = RUN / "checkpoints/epoch1.pt"
    data = (workdir / "results" / checkpoint).read_bytes()
    (workdir / "results" / checkpoint).write_bytes(data[: len(data) // 2])
    proc = snakemake(workdir, f"results/{RUN}/directions/epoch1/gx.h5", check=False)
    assert proc.returncode != 0
    assert f"results/{checkpoint}: not a readable checkpoint" in proc.stderr
    assert (workdir / "results" / RUN / "checkpoints/epoch0.pt").exists()


# --------------------------------------------------------------------------- B. crash recovery

_SHARD_JOB = re.compile(
    r"rule compute_surface_shard:\n\s+input: [^\n]*\n\s+output: (\S+)\n\s+log: (\S+)\n"
    r"\s+jobid: (\d+)\n"
)


def shard_jobs(output: str) -> dict[str, tuple[str, str]]:
    """``(shard, log)`` paths by job id, for every shard job a Snakemake log shows started."""
    return {jobid: (shard, log) for shard, log, jobid in _SHARD_JOB.findall(output)}


def finished_shards(output: str) -> dict[str, str]:
    """Log path by shard path, for every shard job a Snakemake log shows finished."""
    jobs = shard_jobs(output)
    done = re.findall(r"Finished jobid: (\d+) \(Rule: compute_surface_shard\)", output)
    return dict(jobs[j] for j in done)


def assert_store_intact(results: Path) -> None:
    """Every artifact reads, and no temporary file of an unfinished write is left."""
    for rel in artifacts(results):
        if rel.suffix == ".pt":
            assert store.read_checkpoint(results / rel)["model"]
        else:
            assert store.open(results / rel).kind
    leftovers = [p for p in results.rglob(".*") if ".tmp-" in p.name]
    assert not leftovers, leftovers


@pytest.mark.workflow
def test_killed_run_resumes_and_keeps_finished_shards(good_run, tmp_path):
    workdir = new_workdir(tmp_path / "wd")
    log = workdir / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            snakemake_command(workdir, SURFACE, "--cores", "1"),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 takes the jobs along
        )
    try:
        deadline = time.monotonic() + 300
        while not finished_shards(log.read_text()):
            assert proc.poll() is None, f"the run ended before a shard finished:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = finished_shards(log.read_text())
    results = workdir / "results"
    assert not (workdir / SURFACE).exists(), "killed too late"
    assert_store_intact(results)
    assert all((workdir / shard).is_file() for shard in finished)
    logged = {shard: (workdir / log).stat().st_mtime_ns for shard, log in finished.items()}
    # A write killed half-way leaves its temporary file; the rewrite of that shard removes it.
    missing = sorted({f"{i}-of-2.h5" for i in (1, 2)} - {Path(p).name for p in finished})
    stale = results / SHARDS / f".{missing[0]}.tmp-99999999-0badf00d.h5"
    stale.write_bytes(b"half a file")

    snakemake(workdir, "--unlock", lock=True)
    rerun = snakemake(workdir, SURFACE, "--rerun-incomplete", lock=True)
    redone = {shard for shard, _ in shard_jobs(rerun.stdout + rerun.stderr).values()}
    assert redone, "the rerun computed no shard"
    assert not redone & set(finished), "finished shards were computed again"
    for shard, log in finished.items():  # the shards themselves are gone: temp() outputs
        assert (workdir / log).stat().st_mtime_ns == logged[shard], f"{shard} was recomputed"
    assert store.open(workdir / SURFACE).kind == "surface"
    assert not (results / SHARDS).exists() or not any((results / SHARDS).iterdir())
    assert_store_intact(results)
    assert_same_results(good_run / "results", results)


def test_rewrite_removes_temporaries_of_killed_writers(tmp_path):
    final = tmp_path / "curve.h5"
    dead = tmp_path / ".curve.h5.tmp-99999999-0badf00d.h5"  # beyond any pid_max: no such process
    alive = tmp_path / f".curve.h5.tmp-{os.getppid()}-0badf00d.h5"  # a writer still at work
    other = tmp_path / ".other.h5.tmp-99999999-0badf00d.h5"  # another file's business
    for path in (dead, alive, other):
        path.write_bytes(b"half a file")
    _artifact(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [final.name, alive.name, other.name]
    )


# --------------------------------------------------------------------------- C. determinism


@pytest.fixture(scope="module")
def second_run(tmp_path_factory) -> Path:
    """A second clean run, with HDF5 file locking off (which must not change any number)."""
    workdir = new_workdir(
        tmp_path_factory.mktemp("second"), lambda c: c.update(hdf5_file_locking=False)
    )
    snakemake(workdir, SURFACE)
    return workdir


@pytest.mark.workflow
def test_two_clean_runs_are_bitwise_equal(good_run, second_run):
    assert_same_results(good_run / "results", second_run / "results")


# --------------------------------------------------------------------------- D. security


class _Payload:
    """Unpickling this would touch a file: what an attacker's checkpoint could run instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _checkpoint(tmp_path / "evil.pt", meta={"epoch": 0, "payload": _Payload(marker)})
    with pytest.raises(store.ArtifactError, match=r"evil\.pt: refused .*weights_only=True"):
        store.read_checkpoint(path)
    assert not marker.exists()


def _torch_load_calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        ):
            yield node


def test_every_torch_load_is_weights_only():
    sources = [*REPO.glob("landscape/*.py"), *REPO.glob("scripts/*.py")]
    calls = [(p, c) for p in sources for c in _torch_load_calls(p)]
    assert calls, "no torch.load found"
    for path, call in calls:
        flags = {k.arg: k.value for k in call.keywords}
        assert isinstance(flags.get("weights_only"), ast.Constant), f"{path}:{call.lineno}"
        assert flags["weights_only"].value is True, f"{path}:{call.lineno}"


def _rule_files() -> list[Path]:
    return [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]


def test_no_config_value_reaches_a_shell():
    """Rules call scripts; a shell command, if any, interpolates no param, wildcard or config."""
    for path in _rule_files():
        text = path.read_text()
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\s+shell:", line):  # the directive and its indented string
                indent = len(line) - len(line.lstrip())
                command = [line]
                for more in lines[i + 1 :]:
                    if more.strip() and len(more) - len(more.lstrip()) <= indent:
                        break
                    command.append(more)
                command = "\n".join(command)
            elif "shell(" in line:
                command = line
            else:
                continue
            assert not re.search(r"\{(params|wildcards|config)\b", command), f"{path}:{i + 1}"
        for call in ("os.system(", "subprocess.", "os.popen("):
            assert call not in text, f"{path}: {call}"


def test_output_wildcards_are_limited_to_config_names():
    common = (REPO / "rules" / "common.smk").read_text()
    block = common.split("wildcard_constraints:", 1)[1]
    for wildcard, family in [
        ("dataset", "datasets"),
        ("model", "models"),
        ("run", "runs"),
        ("direction", "directions"),
        ("curve", "curves"),
        ("surface", "surfaces"),
    ]:
        assert re.search(rf'\n\s+{wildcard}=[^\n]*config\["{family}"\]', block), wildcard


# --------------------------------------------------------------------------- E. HDF5 locking


def _artifact(path: Path) -> Path:
    with store.create(path, kind="curve", spec={}) as w:
        w.put("x", np.arange(3.0))
    return path


def test_hdf5_locking_can_be_switched_off(tmp_path):
    """With a writer holding the file, a reader fails under locking and succeeds without."""
    path = _artifact(tmp_path / "held.h5")
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    hold = f"import h5py, sys; f = h5py.File({str(path)!r}, 'a'); print('open', flush=True); "
    holder = subprocess.Popen(
        [sys.executable, "-c", hold + "sys.stdin.read()"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        read = f"from landscape import store; print(store.open({str(path)!r}).kind)"
        locked = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True)
        assert locked.returncode != 0 and b"unable to lock file" in locked.stderr
        env["HDF5_USE_FILE_LOCKING"] = "FALSE"
        unlocked = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True)
        assert unlocked.returncode == 0 and unlocked.stdout.strip() == b"curve", unlocked.stderr
        store.set_file_locking(False)  # the library's own switch, in this process
        try:
            assert store.open(path).kind == "curve"
        finally:
            store.set_file_locking(None)
    finally:
        holder.communicate("")


@pytest.mark.workflow
def test_hdf5_file_locking_false_reaches_every_job(good_run, second_run, tmp_path):
    logs = sorted((second_run / "logs").rglob("*.log"))
    assert len(logs) == 7
    for log in logs:
        assert "HDF5 file locking: HDF5_USE_FILE_LOCKING=FALSE" in log.read_text(), log
    if "HDF5_USE_FILE_LOCKING" not in os.environ:
        log = good_run / "logs/train_model" / RUN / "epoch1.log"
        assert "HDF5 file locking: HDF5 default (on)" in log.read_text()
    # The setting changes no number, so switching it reruns nothing.
    config = yaml.safe_load(CONFIG.read_text()) | {"hdf5_file_locking": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(good_run, SURFACE, "-n", configfile=tmp_path / "config.yaml")
    assert "Nothing to be done" in dry.stdout + dry.stderr


# ------------------------------------------------------------ F. config input (issue 11)


@pytest.mark.workflow
def test_unsaved_checkpoint_target_stops_a_completed_run(good_run, tmp_path):
    """Item 8: once catalog.csv exists, Snakemake dropped the failing input function silently."""
    workdir = tmp_path / "wd"
    shutil.copytree(good_run, workdir, symlinks=True)
    snakemake(workdir)  # the complete run: every target of `all`, catalog.csv included
    assert (workdir / "results" / "catalog.csv").is_file()
    edit, message = BAD_CONFIGS["checkpoint_target_unsaved_epoch"]
    config = yaml.safe_load(CONFIG.read_text())
    edit(config)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    before = fingerprint(workdir / "results")
    proc = snakemake(workdir, check=False, configfile=tmp_path / "bad.yaml")
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.count(message) == 1, proc.stderr[-3000:]
    assert "Nothing to be done" not in proc.stdout + proc.stderr
    assert "rule " not in proc.stdout + proc.stderr
    assert fingerprint(workdir / "results") == before


@pytest.mark.workflow
def test_duplicate_key_stops_the_workflow_naming_both_lines(good_run, tmp_path):
    """Item 9: `seed: 1` then `seed: 7` under one direction planned jobs with seed 7."""
    lines = CONFIG.read_text().splitlines(keepends=True)
    at = lines.index("    seed: 1\n")  # under directions.gx
    lines.insert(at + 1, "    seed: 7\n")
    path = tmp_path / "duplicate.yaml"
    path.write_text("".join(lines))
    before = {d: fingerprint(good_run / d) for d in ("results", "logs")}
    proc = snakemake(good_run, SURFACE, check=False, configfile=path)
    message = f"directions.gx.seed: duplicate key at lines {at + 1} and {at + 2} of {path}"
    assert proc.returncode != 0
    assert proc.stderr.count(message) == 1, proc.stderr[-3000:]
    assert "rule " not in proc.stdout + proc.stderr
    assert {d: fingerprint(good_run / d) for d in ("results", "logs")} == before


@pytest.mark.workflow
def test_integral_floats_rerun_nothing(good_run, tmp_path):
    """Item 10: `num: 4.0` for `num: 4` (and the like) is the same config: nothing to redo."""
    text = CONFIG.read_text()
    for old, new in [
        ("x: {num: 4}", "x: {num: 4.0}"),
        ("epochs: 1\n", "epochs: 1.0\n"),
        ("batch_size: 64", "batch_size: 64.0"),
        ("seed: 1\n", "seed: 1.0\n"),
        ("bn_batches: 1", "bn_batches: 1.0"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "floats.yaml"
    path.write_text(text)
    dry = snakemake(good_run, SURFACE, "-n", configfile=path)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


# --------------------------------------------------------------------------- issue 11: provenance


@pytest.mark.workflow
def test_surface_provenance_leads_to_its_checkpoint_and_directions(good_run):
    """Item 5: the merged surface records what its (deleted) shards were computed from."""
    surface = store.open(good_run / SURFACE)
    assert set(surface.inputs) == {"checkpoint", "x", "y"}
    for name, record in surface.inputs.items():
        path = good_run / record["path"]
        assert path.is_file(), name
        assert store.sha256_file(path) == record["sha256"], name
    checkpoint = good_run / surface.inputs["checkpoint"]["path"]
    assert checkpoint == good_run / "results" / RUN / "checkpoints/epoch1.pt"
    assert store.read_checkpoint(checkpoint)["meta"]["epoch"] == 1
    for axis, direction in (("x", "gx"), ("y", "gy")):
        path = good_run / surface.inputs[axis]["path"]
        assert path == good_run / "results" / RUN / f"directions/epoch1/{direction}.h5"
        assert store.open(path).inputs["checkpoint"] == surface.inputs["checkpoint"]
    assert not store.catalog(good_run / "results")["stale"].any()


@pytest.mark.workflow
def test_two_clean_runs_give_identical_catalogs(good_run, second_run, tmp_path):
    """Item 11: same config, same bytes: every SHA-256 and recorded input is equal."""
    a = store.write_catalog(good_run / "results", tmp_path / "a.csv")
    b = store.write_catalog(second_run / "results", tmp_path / "b.csv")
    assert list(a["kind"]).count("checkpoint") == 2
    assert list(a["sha256"]) == list(b["sha256"])
    assert list(a["inputs"]) == list(b["inputs"])
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


@pytest.mark.workflow
def test_catalog_marks_what_a_retrained_checkpoint_makes_stale(good_run, tmp_path):
    """Item 12: artifacts made from a checkpoint that has changed since are listed as stale."""
    work = tmp_path / "work"
    shutil.copytree(good_run / "results", work / "results")
    checkpoint = work / "results" / RUN / "checkpoints/epoch1.pt"
    state = store.read_checkpoint(checkpoint)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    store.write_checkpoint(state, checkpoint)  # as if retrained after a config change
    cat = store.catalog(work / "results").set_index("path")
    stale = cat["stale"].to_dict()
    assert stale == {
        f"{RUN.as_posix()}/checkpoints/epoch0.pt": False,
        f"{RUN.as_posix()}/checkpoints/epoch1.pt": False,
        f"{RUN.as_posix()}/directions/epoch1/gx.h5": True,
        f"{RUN.as_posix()}/directions/epoch1/gy.h5": True,
        f"{RUN.as_posix()}/surfaces/epoch1/plane.h5": True,
    }
    # the README's recipe removes exactly those
    catalog = store.catalog(work / "results")
    for path in catalog.loc[catalog["stale"].fillna(False), "path"]:
        Path(work / "results", path).unlink()
    assert sorted(p.name for p in (work / "results").rglob("*.*")) == ["epoch0.pt", "epoch1.pt"]


@pytest.mark.workflow
def test_huge_grid_stops_the_workflow_with_the_estimate(good_run, tmp_path):
    """Item 13, as a dry run: without the check the 1000 x 1000 surface would start computing."""
    edit, message = BAD_CONFIGS["huge_surface"]
    config = yaml.safe_load(CONFIG.read_text())
    edit(config)
    (tmp_path / "huge.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(good_run, "-n", check=False, configfile=tmp_path / "huge.yaml")
    output = proc.stdout + proc.stderr  # a dry run logs to stdout
    assert proc.returncode != 0
    assert output.count(message) == 1, output[-3000:]
    assert "limits.max_forward_passes_per_job = 1e+08" in output
    assert "rule " not in output
