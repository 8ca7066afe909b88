"""The cluster profile against a real SLURM: the tiny workflow through `--profile profiles/slurm`.

`.ci/slurm-up` starts a one-node SLURM on the CI machine. Where SLURM is not reachable the test
is skipped, and pytest's summary (`-ra`) prints why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_utils import assert_same_results

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[1]
# One BN run and a sharded surface: every kind of job, few enough to keep the test short.
CONFIG = REPO / "tests" / "configs" / "reliability.yaml"
GPU_RULES = (
    "train_model",
    "compute_curve",
    "compute_surface_shard",
    "compute_spectrum",
    "compute_density",
    "compute_trace",
    "compute_loss_change",
    "compute_soa",
    "mine_direction",
)
# This SLURM has no accounting database: job states come from squeue, polled often. The node has
# no GPU, and one thread per job keeps results comparable with a local run.
TEST_CLUSTER = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "3",
    "--set-resources",
    *(f"{rule}:gpu=0" for rule in GPU_RULES),
    "--set-threads",
    *(f"{rule}=1" for rule in GPU_RULES),
]


def slurm_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (run .ci/slurm-up)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()[:200]}"
    if not any(s in proc.stdout for s in ("idle", "mix", "alloc")):
        return f"no usable SLURM node (states: {proc.stdout.split()})"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed"
    return None


def run(workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def test_slurm_profile_reproduces_a_local_run(tmp_path):
    problem = slurm_problem()
    if problem:
        pytest.skip(problem)
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for wd in (local, cluster):
        wd.mkdir()
        shutil.copy(CONFIG, wd / "config.yaml")
    run(local, "--cores", "2")
    log = run(cluster, "--profile", str(REPO / "profiles" / "slurm"), "--jobs", "4", *TEST_CLUSTER)

    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    assert len(submitted) >= 8, f"too few jobs went through sbatch: {submitted}"
    assert_same_results(local / "results", cluster / "results")
