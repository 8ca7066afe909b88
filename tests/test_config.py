"""The shipped configs validate against the schema; cross-references are checked by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from landscape.config import ConfigError, check_references, direction_references

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "schemas" / "config.schema.yaml")


def load(name: str) -> dict:
    config = yaml.safe_load((REPO / name).read_text())
    validate(config, SCHEMA)
    return config


@pytest.mark.parametrize("name", ["config.yaml", "tests/configs/tiny.yaml", "config/paper.yaml"])
def test_shipped_configs_validate(name):
    config = load(name)
    check_references(config)
    assert config["runs"]


def test_schema_fills_defaults():
    config = load("tests/configs/tiny.yaml")
    train = config["runs"]["mlp"]["train"]
    assert train["momentum"] == 0.9 and train["weight_decay"] == 5e-4
    assert config["curves"]["gauss_filnorm"]["bn_mode"] == "recompute"
    assert config["surfaces"]["plane"]["x"] == {"min": -1.0, "max": 1.0, "num": 3}


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c["runs"]["mlp"].update(model="resnet"), "runs.mlp.model"),
        (lambda c: c["runs"]["mlp"]["train"].update(checkpoints=[9]), "runs.mlp.train.checkpoints"),
        (lambda c: c["curves"]["gauss_filnorm"].update(runs=["nope"]), "curves.gauss_filnorm.runs"),
        (lambda c: c["curves"]["gauss_filnorm"].update(epochs=[7]), "curves.gauss_filnorm.epochs"),
        (
            lambda c: c["curves"]["gauss_filnorm"]["lambda"].update(min=2.0),
            "curves.gauss_filnorm.lambda",
        ),
        (lambda c: c["surfaces"]["plane"].update(directions=["a", "b"]), "surfaces.plane"),
        (
            lambda c: c["directions"].update(t={"kind": "checkpoint", "target": {"run": "x"}}),
            "directions.t.target.run",
        ),
    ],
)
def test_bad_references_name_the_key(edit, key):
    config = copy.deepcopy(load("tests/configs/tiny.yaml"))
    edit(config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_references(config)


def test_direction_references_resolve_runs_and_epochs():
    config = load("tests/configs/tiny.yaml")
    config["directions"]["other"] = {"kind": "checkpoint", "target": {"run": "vgg_bn", "epoch": 0}}
    assert direction_references(config, "other", "mlp") == {"target": ("vgg_bn", 0)}
    assert direction_references(config, "gauss_filnorm", "mlp") == {}
