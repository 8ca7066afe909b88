"""Shared fixtures: seeded RNGs and small model/data factories."""

from __future__ import annotations

import os
import random

import pytest
import torch

# Under xdist every worker gets its share of the cores: torch's default of one thread per core in
# each worker oversubscribes the machine.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    from landscape.data import load_data

    return load_data({"source": "digits"}, "cpu", key="datasets.digits")


# Files that take minutes, longest first: with `--dist loadfile`, workers take files in collection
# order, so starting these first keeps one of them from running alone at the end.
SLOW_FILES = (
    "test_slurm.py",
    "test_workflow.py",
    "test_reliability.py",
    "test_workflow_curvature.py",
    "test_hessian.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # stable: the order within a file is kept


def pytest_xdist_auto_num_workers(config):
    """One worker per core, and one more for the SLURM test, which mostly waits on squeue."""
    return (os.cpu_count() or 1) + 1
