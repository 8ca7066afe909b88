"""The shipped configs validate against the schema; cross-references are checked by name."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from landscape.config import (
    ConfigError,
    canonical,
    check_cost,
    check_duplicate_keys,
    check_finite,
    check_references,
    checkpoint_epochs,
    direction_references,
    direction_spec,
    evaluation_spec,
    normalize_numbers,
    run_spec,
    schema_error,
    split_sizes,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "schemas" / "config.schema.yaml")
SCHEMA_DICT = yaml.safe_load(Path(SCHEMA).read_text())


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
    assert config["curves"]["gauss_filnorm"]["bn_mode"] == "auto"  # resolved in its spec
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
        (
            lambda c: c["surface_plots"].update(interactive=["plane", "nope"]),
            "surface_plots.interactive: 'nope' is not a key of surfaces",
        ),
    ],
)
def test_bad_references_name_the_key(edit, key):
    config = copy.deepcopy(load("tests/configs/tiny.yaml"))
    edit(config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_references(config)


def test_schema_rejects_an_unknown_lanczos_basis():
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config.setdefault("hessian", {})["spectrum"] = {"basis": "float16"}
    with pytest.raises(Exception, match="float16"):
        validate(config, SCHEMA)
    config["hessian"]["spectrum"] = {"basis": "float32"}
    validate(config, SCHEMA)
    assert "basis" in config["hessian"]["spectrum"]
    config["hessian"]["spectrum"] = {}
    validate(config, SCHEMA)
    assert "basis" not in config["hessian"]["spectrum"]  # no default: old specs unchanged


def test_direction_references_resolve_runs_and_epochs():
    config = load("tests/configs/tiny.yaml")
    config["directions"]["other"] = {"kind": "checkpoint", "target": {"run": "vgg_bn", "epoch": 0}}
    assert direction_references(config, "other", "mlp") == {"target": ("vgg_bn", 0)}
    assert direction_references(config, "gauss_filnorm", "mlp") == {}


# --------------------------------------------------------------------------- issue 11, items 8-13


def _with_checkpoint_direction(config: dict, target: dict, runs="all") -> dict:
    config["directions"]["d"] = {"kind": "checkpoint", "target": target}
    config["curves"]["c"] = {"direction": "d", "runs": runs, "epochs": "final"}
    return config


def test_checkpoint_target_epoch_is_checked_without_a_run():
    """The target is then a checkpoint of each run the direction is made for (item 8)."""
    config = _with_checkpoint_direction(load("tests/configs/tiny.yaml"), {"epoch": 5})
    with pytest.raises(ConfigError) as error:
        check_references(config)
    assert str(error.value) == (
        "directions.d.target.epoch: run 'mlp' has no checkpoint at epoch 5 "
        "(add it to runs.mlp.train.checkpoints)"
    )


def test_checkpoint_target_epoch_is_checked_only_on_the_runs_that_use_it():
    config = load("tests/configs/tiny.yaml")
    assert 1 in checkpoint_epochs(config["runs"]["mlp"]["train"])
    assert 1 not in checkpoint_epochs(config["runs"]["vgg_bn"]["train"])
    check_references(_with_checkpoint_direction(config, {"epoch": 1}, runs=["mlp"]))
    _with_checkpoint_direction(config, {"epoch": 1}, runs=["mlp", "vgg_bn"])
    with pytest.raises(ConfigError, match=r"target\.epoch: run 'vgg_bn' has no checkpoint"):
        check_references(config)
    config["curves"].pop("c")  # a direction nothing reads is made for no run
    check_references(config)


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "runs:\n"  # 1
        "  a: {dataset: d, model: m}\n"  # 2
        "directions:\n"  # 3
        "  gx:\n"  # 4
        "    seed: 1\n"  # 5
        "    kind: noise\n"  # 6
        "    seed: 7\n"  # 7
    )
    with pytest.raises(ConfigError) as error:
        check_duplicate_keys([path])
    assert str(error.value) == f"directions.gx.seed: duplicate key at lines 5 and 7 of {path}"
    path.write_text("surfaces: {}\nruns:\n  a: {}\nsurfaces:\n  s: {}\n")  # a top-level block
    with pytest.raises(ConfigError, match=r"^surfaces: duplicate key at lines 1 and 4 of "):
        check_duplicate_keys([path])
    path.write_text('{"runs": {"a": [{"x": 1, "x": 2}]}}')  # JSON too, list items by index
    with pytest.raises(ConfigError, match=r"^runs\.a\[0\]\.x: duplicate key at lines 1 and 1"):
        check_duplicate_keys([path])


def test_shipped_configs_have_no_duplicate_keys():
    """paper.yaml overrides keys of merged anchors (`<<: *curve`): that is no duplicate."""
    paths = [REPO / "config.yaml", *sorted((REPO / "config").glob("*.yaml"))]
    check_duplicate_keys([*paths, *sorted((REPO / "tests" / "configs").glob("*.yaml"))])
    assert "<<: *" in (REPO / "config" / "paper.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: .nan", "runs.mlp.train.lr: nan is not a finite number"),
        ("lr: -.inf", "runs.mlp.train.lr: -inf is not a finite number"),
        ("checkpoints: [0, .inf]", "runs.mlp.train.checkpoints[1]: inf is not a finite number"),
    ],
)
def test_non_finite_numbers_name_the_key(text, message):
    config = load("tests/configs/tiny.yaml")
    config["runs"]["mlp"]["train"].update(yaml.safe_load(text))
    with pytest.raises(ConfigError) as error:
        check_finite(config)
    assert str(error.value) == message


def test_non_finite_lambda_passes_the_schema_but_not_check_finite():
    config = load("tests/configs/tiny.yaml")
    config["curves"]["gauss_filnorm"]["lambda"]["min"] = float("inf")
    validate(config, SCHEMA)  # what the schema alone let through
    with pytest.raises(ConfigError, match=r"^curves\.gauss_filnorm\.lambda\.min: inf is not"):
        check_finite(config)


def _spelled(replacements: dict[str, str]) -> dict:
    text = (REPO / "tests" / "configs" / "tiny.yaml").read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    config = yaml.safe_load(text)
    validate(config, SCHEMA)
    normalize_numbers(config, SCHEMA_DICT)
    return config


def test_integral_floats_give_the_same_canonical_spec_as_integers():
    """`num: 3.0` and `num: 3`, `epochs: 2.0` and `epochs: 2`: same specs, so no rerun (item 10)."""
    plain = _spelled({})
    text = (REPO / "tests" / "configs" / "tiny.yaml").read_text()
    edits = {f"{k}: {v}": f"{k}: {v}.0" for k, v in re.findall(r"\b(num|epochs): (\d+)\b", text)}
    assert edits
    floats = _spelled(edits)
    assert floats == plain
    for family in ("curves", "surfaces"):
        for name in plain[family]:
            assert canonical(evaluation_spec(floats, family, name)) == canonical(
                evaluation_spec(plain, family, name)
            )
    for run in plain["runs"]:
        assert canonical(run_spec(floats, run)) == canonical(run_spec(plain, run))
    assert isinstance(floats["surfaces"]["plane"]["x"]["num"], int)


def test_numbers_take_the_type_of_their_key():
    config = load("tests/configs/tiny.yaml")
    config["directions"]["d"] = {"kind": "checkpoint", "target": {"epoch": 0.0}}
    config["directions"]["g"] = {"kind": "gradient", "batches": 2.0, "scale": 2}
    config["models"]["vgg_bn"]["layers"] = [4.0, "M", 8]
    config["curves"]["gauss_filnorm"]["lambda"].update(min=-1, max=1)
    config["runs"]["mlp"]["train"]["checkpoints"] = [0, 1.0]
    validate(config, SCHEMA)
    normalize_numbers(config, SCHEMA_DICT)
    got = [
        config["directions"]["d"]["target"]["epoch"],
        config["directions"]["g"]["batches"],
        config["directions"]["g"]["scale"],
        config["models"]["vgg_bn"]["layers"],
        config["curves"]["gauss_filnorm"]["lambda"],
        config["runs"]["mlp"]["train"]["checkpoints"],
    ]
    assert repr(got) == repr([0, 2, 2.0, [4, "M", 8], {"min": -1.0, "max": 1.0, "num": 5}, [0, 1]])
    config["directions"]["d"]["target"]["epoch"] = 0.5  # not integral: the schema refuses it
    assert schema_error(config, SCHEMA_DICT).startswith("directions.d.target.epoch: 0.5 is not")


def test_split_sizes_match_the_loaded_digits():
    from landscape.data import load_data

    for block in ({"source": "digits"}, {"source": "digits", "test_fraction": 0.3, "max_test": 500},
                  {"source": "digits", "max_train": 100}):
        data = load_data(block, device="cpu")
        assert split_sizes(block) == {"train": len(data.train), "test": len(data.test)}, block


def _reliability() -> dict:
    config = yaml.safe_load((REPO / "tests" / "configs" / "reliability.yaml").read_text())
    validate(config, SCHEMA)
    return config


def test_cost_limit_is_exact_at_its_bound():
    """The 4x3 surface in 2 shards: 6 points a job, each on 450 test + 1 BN batch of 512."""
    config = _reliability()
    per_job = 6 * (450 + 512)
    config["limits"]["max_forward_passes_per_job"] = per_job
    check_cost(config)
    config["limits"]["max_forward_passes_per_job"] = per_job - 1
    with pytest.raises(ConfigError, match=r"^surfaces\.plane\.x\.num and surfaces\.plane\.y\.num"):
        check_cost(config)
    check_cost(config, shards=3)  # --set-scatter surface=3: 4 points a job
    config["surfaces"]["plane"]["bn_mode"] = "keep"  # no BN batches: 6 x 450
    check_cost(config)


def test_huge_grid_is_refused_with_the_estimate_and_paper_config_passes():
    config = _reliability()
    config["surfaces"]["plane"].update(x={"num": 1000, "min": -1.0, "max": 1.0})
    config["surfaces"]["plane"]["y"]["num"] = 1000
    with pytest.raises(ConfigError) as error:
        check_cost(config)
    assert str(error.value).startswith(
        "surfaces.plane.x.num and surfaces.plane.y.num: 1000 x 1000 points in 2 shards is "
        f"500000 points per job, about {500000 * 962:.2g} forward passes (examples) per job, "
        "over limits.max_forward_passes_per_job = 1e+08"
    )
    config["limits"]["max_forward_passes_per_job"] = None
    check_cost(config)
    paper = load("config/paper.yaml")
    check_cost(paper)
    check_cost(paper, shards=1)  # its 51x51 ResNet-56 surface in one job: 2601 x 30,480
    curve = {"direction": "gauss_filnorm", "lambda": {"num": 1001}, "runs": ["rn56ns_c10"]}
    paper["curves"]["long"] = curve  # 1001 x (50,000 + 10,000 + 4 x 512): 6.2e7
    validate(paper, SCHEMA)
    check_cost(paper)
    paper["curves"]["long"]["lambda"]["num"] = 2001
    with pytest.raises(ConfigError, match=r"^curves\.long\.lambda\.num: 2001 points is 2001"):
        check_cost(paper)


def test_a_failing_number_alternative_does_not_make_an_integer_a_float():
    schema = {
        "type": "object",
        "properties": {"w": {"anyOf": [{"type": "number", "minimum": 10}, {"type": "integer"}]}},
    }
    config = {"w": 3}
    normalize_numbers(config, schema)
    assert repr(config) == "{'w': 3}"


def _hessian_directions(hessian_bn_mode: str = "eval") -> dict:
    """tiny.yaml with a curve along each kind of direction and surfaces that mix them."""
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["hessian"] = {"bn_mode": hessian_bn_mode}
    config["directions"].update(
        pe1={"kind": "eigenvector", "which": "LA", "index": 1},
        wpeak={"kind": "mined", "algorithm": "wpeak"},
        grad={"kind": "gradient"},
        to_end={"kind": "checkpoint"},
    )
    for name in ("pe1", "wpeak", "grad", "to_end"):
        config["curves"][name] = {"direction": name}
    config["curves"]["pe1_upbn"] = {"direction": "pe1", "bn_mode": "recompute"}
    config["surfaces"]["gauss_pe1"] = {"directions": ["gauss_filnorm", "pe1"]}
    config["surfaces"]["pe1_wpeak"] = {"directions": ["pe1", "wpeak"]}
    validate(config, SCHEMA)
    return config


def test_curves_along_hessian_directions_default_to_the_bn_mode_of_their_loss():
    """auto: No UpBN (keep) along directions of the eval-mode loss, UpBN elsewhere."""
    config = _hessian_directions()
    assert config["curves"]["pe1"]["bn_mode"] == "auto"
    modes = {name: evaluation_spec(config, "curves", name)["bn_mode"] for name in config["curves"]}
    assert modes == {
        "gauss_filnorm": "recompute",  # the paper's UpBN for Gaussian curves (V2)
        "pe1": "keep",  # the Hessian of hessian.bn_mode eval: theta's running statistics
        "wpeak": "keep",  # Algorithms 1 and 2 run on the eval-mode loss
        "grad": "keep",  # so does the gradient
        "to_end": "recompute",
        "pe1_upbn": "recompute",  # the old behaviour, one config line away
    }
    surfaces = {name: evaluation_spec(config, "surfaces", name) for name in config["surfaces"]}
    assert {n: s["bn_mode"] for n, s in surfaces.items()} == {
        "plane": "recompute",
        "gauss_pe1": "keep",
        "pe1_wpeak": "keep",
    }
    check_references(config)
    train = _hessian_directions("train")  # batch statistics follow the parameters: UpBN
    assert evaluation_spec(train, "curves", "pe1")["bn_mode"] == "recompute"
    assert evaluation_spec(train, "curves", "wpeak")["bn_mode"] == "keep"


def test_auto_bn_mode_leaves_the_spec_of_a_gaussian_curve_as_it_was():
    """No rerun: a curve that took the old default recompute has the same canonical spec."""
    config = _hessian_directions()
    old = {**config["curves"]["gauss_filnorm"], "bn_mode": "recompute"}
    old = {k: v for k, v in old.items() if k not in ("runs", "epochs", "plot")}
    assert canonical(evaluation_spec(config, "curves", "gauss_filnorm")) == canonical(old)
    soa = {"direction": "pe1"}
    config["soa"] = {"s": soa}
    validate(config, SCHEMA)
    assert "bn_mode" not in evaluation_spec(config, "soa", "s")  # the hessian block's


def test_conflicting_auto_bn_modes_name_the_key():
    config = _hessian_directions("train")  # P.E.1 of the batch-statistics loss, mined in eval
    with pytest.raises(ConfigError, match=r"^surfaces\.pe1_wpeak\.bn_mode: auto .*pe1.*wpeak"):
        check_references(config)
    config["surfaces"]["pe1_wpeak"]["bn_mode"] = "keep"
    check_references(config)


def test_cost_counts_the_bn_batches_of_the_resolved_bn_mode():
    config = _hessian_directions()
    limit = 41 * (1347 + 450)  # a 41-point curve on both splits, without BN batches
    config["limits"] = {"max_forward_passes_per_job": limit}
    config["curves"] = {"pe1": config["curves"]["pe1"]}
    config["surfaces"] = {}
    check_cost(config)  # keep: no BN batches
    config["curves"]["gauss"] = {"direction": "gauss_filnorm", "runs": ["mlp"]}
    validate(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"^curves\.gauss\.lambda\.num"):
        check_cost(config)  # auto is recompute here: 4 x 512 BN samples a point


def test_direction_spec_holds_only_what_its_algorithm_reads_and_its_default_normalization():
    mined = {"kind": "mined", "algorithm": "wpeak", "phi_init": "theta", "init_seed": 1}
    vvv = {**mined, "algorithm": "vvv"}
    config = {"directions": {"w": mined, "v": vvv, "i": {**vvv, "phi_init": "init"}}}
    assert "phi_init" not in direction_spec(config, "w")
    assert "init_seed" not in direction_spec(config, "w")
    assert direction_spec(config, "v")["phi_init"] == "theta"
    assert "init_seed" not in direction_spec(config, "v")
    assert direction_spec(config, "i")["init_seed"] == 1
    eigenvector = {"directions": {"e": {"kind": "eigenvector", "which": "SA", "index": 1}}}
    assert direction_spec(eigenvector, "e")["normalization"] == "norm"
    assert direction_spec(eigenvector, "e")["bias_bn"] == "raw"


# --------------------------------------------------------------------------- issue 12: V6, Alg. 2


def _closest_config() -> dict:
    config = load("tests/configs/tiny.yaml")
    config["directions"]["grad_batch"] = {"kind": "gradient", "batches": 1}
    config["directions"]["closest"] = {
        "kind": "noise",
        "distribution": "gaussian",
        "seed": 1,
        "closest_to": {"direction": "grad_batch"},
        "normalization": "match",
    }
    validate(config, SCHEMA)  # fills closest_to.candidates
    return config


def test_closest_to_validates_and_its_spec_holds_the_reference_spec():
    config = _closest_config()
    check_references(config)
    spec = direction_spec(config, "closest")
    assert spec["closest_to"] == {
        "direction": "grad_batch",
        "candidates": 100,
        "reference": direction_spec(config, "grad_batch"),
    }
    assert spec["normalization"] == "match" and spec["bias_bn"] == "zero"
    config["directions"]["grad_batch"]["batches"] = 2
    assert direction_spec(config, "closest") != spec  # a changed reference reruns it
    assert "closest_to" not in direction_spec(config, "gauss_y")


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda d: d["closest"]["closest_to"].update(direction="nope"),
            r"directions\.closest\.closest_to\.direction: 'nope' is not a key of directions",
        ),
        (
            lambda d: d["closest"]["closest_to"].update(direction="closest"),
            r"directions\.closest\.closest_to\.direction: .*itself",
        ),
        (
            lambda d: d.update(
                grad_batch={"kind": "noise", "closest_to": {"direction": "closest"}}
            ),
            r"directions\.grad_batch\.closest_to\.direction: 'closest' leads back: "
            r"grad_batch -> closest -> grad_batch",
        ),
        (
            lambda d: d["gauss_y"].update(normalization="match"),
            r"directions\.gauss_y\.normalization: match needs closest_to",
        ),
        (
            lambda d: d["grad_batch"].update(closest_to={"direction": "gauss_y"}),
            r"directions\.grad_batch\.closest_to: applies to kind noise only",
        ),
    ],
)
def test_bad_closest_to_names_the_key(edit, key):
    config = _closest_config()
    edit(config["directions"])
    with pytest.raises(ConfigError, match=key):
        check_references(config)


def test_closest_to_schema_keys():
    config = _closest_config()
    config["directions"]["closest"]["closest_to"]["candidates"] = 0
    assert schema_error(config, SCHEMA_DICT).startswith(
        "directions.closest.closest_to.candidates: 0 is less than the minimum of 1"
    )
    del config["directions"]["closest"]["closest_to"]["candidates"]
    del config["directions"]["closest"]["closest_to"]["direction"]
    assert "direction" in schema_error(config, SCHEMA_DICT)


def _phi_run_config(**keys) -> dict:
    config = load("tests/configs/tiny.yaml")
    second = copy.deepcopy(config["runs"]["mlp"])
    second["train"].update(seed=1, checkpoints=[0, 2])
    config["runs"]["mlp_b"] = second
    block = {"kind": "mined", "algorithm": "vvv", "phi_init": "run", "phi_run": "mlp_b", **keys}
    config["directions"]["v"] = {k: v for k, v in block.items() if v is not None}
    config["curves"]["cv"] = {"direction": "v", "runs": ["mlp"], "epochs": [1, 2]}
    validate(config, SCHEMA)
    return config


def test_phi_run_reference_is_theta_epoch_if_that_run_has_it_else_final():
    config = _phi_run_config()
    check_references(config)
    assert direction_references(config, "v", "mlp", 2) == {"phi_init": ("mlp_b", 2)}
    assert direction_references(config, "v", "mlp", 0) == {"phi_init": ("mlp_b", 0)}
    assert direction_references(config, "v", "mlp", 1) == {"phi_init": ("mlp_b", 2)}  # final
    config["directions"]["v"]["phi_epoch"] = 0
    assert direction_references(config, "v", "mlp", 2) == {"phi_init": ("mlp_b", 0)}
    config["directions"]["v"]["phi_epoch"] = "final"
    assert direction_references(config, "v", "mlp", 0) == {"phi_init": ("mlp_b", 2)}
    spec = direction_spec(config, "v")
    assert (spec["phi_init"], spec["phi_run"], spec["phi_epoch"]) == ("run", "mlp_b", "final")
    assert "init_seed" not in spec
    config["directions"]["v"]["phi_init"] = "theta"
    assert direction_references(config, "v", "mlp", 2) == {}
    assert "phi_run" not in direction_spec(config, "v")
    assert "phi_epoch" not in direction_spec(config, "v")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"phi_run": None}, r"directions\.v\.phi_run: required with phi_init: run"),
        ({"phi_run": "nope"}, r"directions\.v\.phi_run: 'nope' is not a key of runs"),
        ({"phi_run": "vgg_bn"}, r"directions\.v\.phi_run: run 'vgg_bn' .*another architecture"),
        ({"phi_epoch": 1}, r"directions\.v\.phi_epoch: run 'mlp_b' has no checkpoint at epoch 1"),
    ],
)
def test_bad_phi_run_names_the_key(keys, message):
    config = _phi_run_config(**keys)
    with pytest.raises(ConfigError, match=message):
        check_references(config)


# --------------------------------------------------------------------------- fine-tuning pair


def _fine_tune_config(**init) -> dict:
    """tiny.yaml plus a pre-training run on digits 0-4 and a fine-tuning run started from it."""
    config = load("tests/configs/tiny.yaml")
    config["datasets"]["digits_04"] = {"source": "digits", "classes": [0, 1, 2, 3, 4]}
    train = copy.deepcopy(config["runs"]["vgg_bn"]["train"])
    config["runs"]["pre"] = {"dataset": "digits_04", "model": "vgg_bn", "train": train}
    fine = {**copy.deepcopy(train), "lr": 0.01, "init": {"run": "pre", **init}}
    config["runs"]["ft"] = {"dataset": "digits", "model": "vgg_bn", "train": fine}
    validate(config, SCHEMA)
    return config


def test_fine_tune_spec_holds_the_source_run_spec_and_resolved_epoch():
    config = _fine_tune_config()
    check_references(config)
    assert config["runs"]["ft"]["train"]["init"] == {"run": "pre", "epoch": "final"}  # default
    spec = run_spec(config, "ft")
    assert spec["train"]["init"] == {"run": "pre", "epoch": 2, "spec": run_spec(config, "pre")}
    assert run_spec(config, "pre")["dataset"]["classes"] == [0, 1, 2, 3, 4]
    assert "init" not in run_spec(config, "vgg_bn")["train"]
    explicit = _fine_tune_config(epoch=2)
    assert canonical(run_spec(explicit, "ft")) == canonical(spec)
    config["runs"]["pre"]["train"]["checkpoints"] = [0, 1, 2]  # keeps the weights: same spec
    assert canonical(run_spec(config, "ft")) == canonical(spec)
    config["runs"]["pre"]["train"]["lr"] = 0.05  # another source: the fine-tune is retrained
    assert canonical(run_spec(config, "ft")) != canonical(spec)
    assert run_spec(_fine_tune_config(epoch=0), "ft")["train"]["init"]["epoch"] == 0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["runs"]["ft"]["train"]["init"].update(run="nope"),
         r"runs\.ft\.train\.init\.run: 'nope' is not a key of runs"),
        (lambda c: c["runs"]["ft"]["train"]["init"].update(run="ft"),
         r"runs\.ft\.train\.init\.run: .*ft -> ft"),
        (lambda c: c["runs"]["pre"]["train"].update(init={"run": "ft", "epoch": "final"}),
         r"runs\.pre\.train\.init\.run: .*pre -> ft -> pre"),
        (lambda c: c["runs"]["ft"]["train"]["init"].update(epoch=1),
         r"runs\.ft\.train\.init\.epoch: run 'pre' has no checkpoint at epoch 1"),
        (lambda c: c["runs"]["ft"].update(model="mlp"),
         r"runs\.ft\.train\.init: run 'pre' \(model 'vgg_bn'\) has another architecture"),
        (lambda c: c["datasets"]["digits_04"].update(source="cifar100", root="/data"),
         r"runs\.ft\.train\.init: run 'pre' has 100 classes .* run 'ft' 10"),
        (lambda c: c["datasets"]["digits_04"].update(classes=[0, 10]),
         r"datasets\.digits_04\.classes: class 10 is outside \[0, 10\)"),
    ],
)
def test_bad_fine_tune_references_name_the_key(edit, message):
    config = _fine_tune_config()
    edit(config)
    with pytest.raises(ConfigError, match=message):
        check_references(config)


def test_fine_tune_and_classes_schema():
    config = _fine_tune_config()
    config["runs"]["ft"]["train"]["init"]["epochs"] = 2
    error = schema_error(config, SCHEMA_DICT)
    assert error == "runs.ft.train.init.epochs: unknown key (known: epoch, run)"
    config = _fine_tune_config()
    config["datasets"]["digits_04"]["classes"] = []
    error = schema_error(config, SCHEMA_DICT)
    assert error.startswith("datasets.digits_04.classes: [] should be non-empty")
    config["datasets"]["digits_04"]["classes"] = [1, 1]
    assert "datasets.digits_04.classes" in schema_error(config, SCHEMA_DICT)
    config["datasets"]["digits_04"]["classes"] = [-1]
    assert schema_error(config, SCHEMA_DICT).startswith("datasets.digits_04.classes[0]: -1 is less")
