"""Shared fixtures: seeded RNGs and small model/data factories."""

from __future__ import annotations

import random

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    from landscape.data import load_data

    return load_data({"source": "digits"}, "cpu", key="datasets.digits")
