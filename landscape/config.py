"""Config helpers used while the workflow is parsed: cross-references, spec slices, targets.

The JSON schema (``schemas/config.schema.yaml``) checks types, ranges and enums of every key;
this module checks what a schema cannot: that names refer to existing blocks and that epochs
exist. It imports neither torch nor h5py, so building the DAG stays fast.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape.source_files import data_files

HESSIAN_PARTS = ("spectrum", "density", "trace", "loss_change")


class ConfigError(ValueError):
    """A config value that the schema accepts but that refers to something missing."""


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): equal specs give equal strings.

    >>> canonical({"b": 1, "a": [1.0, "x"]})
    '{"a":[1.0,"x"],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def checkpoint_epochs(train: Mapping[str, Any]) -> list[int]:
    """Sorted checkpoint epochs of a run's ``train`` block: the listed ones, 0 and the last.

    >>> checkpoint_epochs({"epochs": 30, "checkpoints": [10]})
    [0, 10, 30]
    """
    return sorted(set(train.get("checkpoints", [])) | {0, train["epochs"]})


def final_epoch(config: Mapping[str, Any], run: str) -> int:
    """The last epoch of a run."""
    return config["runs"][run]["train"]["epochs"]


def check_references(config: Mapping[str, Any]) -> None:
    """Checks every name that points at another block, and every epoch.

    Raises:
        ConfigError: naming the offending key, e.g. ``runs.mlp.dataset``.
    """
    for name, run in config["runs"].items():
        for section in ("dataset", "model"):
            if run[section] not in config[f"{section}s"]:
                raise ConfigError(
                    f"runs.{name}.{section}: '{run[section]}' is not a key of {section}s "
                    f"(known: {sorted(config[f'{section}s'])})"
                )
        train = run["train"]
        late = sorted(e for e in train["checkpoints"] if e > train["epochs"])
        if late:
            raise ConfigError(
                f"runs.{name}.train.checkpoints: epochs {late} exceed "
                f"runs.{name}.train.epochs = {train['epochs']}"
            )
    for name in config["runs"]:
        _check_init(config, name)
    for name in config.get("datasets", {}):
        _check_classes(config, name)
    for name, direction in config.get("directions", {}).items():
        if direction.get("kind") == "checkpoint":
            _check_target(config, name)
        _check_closest_to(config, name)
        _check_phi_run(config, name)
    families = (("curves", ("direction",)), ("surfaces", ("directions",)), ("soa", ("direction",)))
    for family, keys in families:
        for name, block in config.get(family, {}).items():
            _check_block(config, family, name, block, keys)
            if "bn_mode" in block:
                resolve_bn_mode(config, family, name)  # raises for auto over mixed modes
    _check_hessian(config)
    _check_interactive(config)


def _check_interactive(config: Mapping[str, Any]) -> None:
    """``surface_plots.interactive`` names surfaces."""
    names = config.get("surface_plots", {}).get("interactive", "all")
    unknown = [] if names == "all" else [n for n in names if n not in config.get("surfaces", {})]
    if unknown:
        raise ConfigError(
            f"surface_plots.interactive: '{unknown[0]}' is not a key of surfaces "
            f"(known: {sorted(config.get('surfaces', {}))})"
        )


# Classes of the sources whose number of classes the config alone tells.
SOURCE_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "svhn": 10, "flowers102": 102}


def dataset_classes(block: Mapping[str, Any]) -> int | None:
    """The number of classes of a dataset block, where the config alone tells it.

    >>> dataset_classes({"source": "cifar100"}), dataset_classes({"source": "imagefolder"})
    (100, None)
    >>> dataset_classes({"source": "synthetic", "like": "svhn", "num_classes": 4})
    4
    """
    if block.get("source") == "synthetic":
        count = (synthetic_layout(block) or {}).get("num_classes")
        return count if isinstance(count, int) else None
    return SOURCE_CLASSES.get(block.get("source"))


def _check_classes(config: Mapping[str, Any], name: str) -> None:
    """A dataset's ``classes`` lie below its source's number of classes (where that is known)."""
    block = config["datasets"][name]
    count = dataset_classes(block)
    outside = [c for c in block.get("classes") or () if count is not None and not 0 <= c < count]
    if outside:
        raise ConfigError(
            f"datasets.{name}.classes: class {outside[0]} is outside [0, {count}) "
            f"(source '{block['source']}' has {count} classes)"
        )


def init_source(config: Mapping[str, Any], run: str) -> tuple[str, int] | None:
    """The run and epoch of the checkpoint that epoch 0 of ``run`` starts from, or None.

    >>> config = {"runs": {"pre": {"train": {"epochs": 5}},
    ...     "ft": {"train": {"epochs": 2, "init": {"run": "pre", "epoch": "final"}}}}}
    >>> init_source(config, "ft"), init_source(config, "pre")
    (('pre', 5), None)
    """
    init = config["runs"][run]["train"].get("init")
    if init is None:
        return None
    source, epoch = init["run"], init.get("epoch", "final")
    return source, final_epoch(config, source) if epoch == "final" else epoch


def _check_init(config: Mapping[str, Any], name: str) -> None:
    """``train.init`` names another run of the same architecture, a kept epoch, and no cycle."""
    init = config["runs"][name]["train"].get("init")
    if init is None:
        return
    key, source = f"runs.{name}.train.init", init["run"]
    if source not in config["runs"]:
        raise ConfigError(f"{key}.run: '{source}' is not a key of runs")
    _check_init_chain(config, name)
    if _architecture(config, name) != _architecture(config, source):
        raise ConfigError(
            f"{key}: run '{source}' (model '{config['runs'][source]['model']}') has another "
            f"architecture than run '{name}' (model '{config['runs'][name]['model']}'); "
            "fine-tuning starts from the same parameters"
        )
    classes = [
        dataset_classes(config["datasets"][config["runs"][run]["dataset"]])
        for run in (source, name)
    ]
    if None not in classes and classes[0] != classes[1]:
        raise ConfigError(
            f"{key}: run '{source}' has {classes[0]} classes (model outputs) and run '{name}' "
            f"{classes[1]}; fine-tuning keeps the head"
        )
    epoch = init.get("epoch", "final")
    if epoch != "final" and epoch not in checkpoint_epochs(config["runs"][source]["train"]):
        raise ConfigError(
            f"{key}.epoch: run '{source}' has no checkpoint at epoch {epoch} "
            f"(add it to runs.{source}.train.checkpoints)"
        )


def _check_init_chain(config: Mapping[str, Any], name: str) -> None:
    """The runs that ``train.init`` leads through from ``name`` do not come back to it."""
    chain = [name]
    while (init := config["runs"][chain[-1]]["train"].get("init")) is not None:
        source = init["run"]
        if source not in config["runs"]:
            return  # the check of the run naming it reports it
        chain.append(source)
        if source == name:
            raise ConfigError(
                f"runs.{name}.train.init.run: runs start from each other's checkpoints: "
                f"{' -> '.join(chain)}"
            )
        if source in chain[:-1]:
            return  # a cycle that does not pass here: its members' checks name it


def _check_hessian(config: Mapping[str, Any]) -> None:
    block = config.get("hessian", {})
    spectrum = block.get("spectrum", {})
    k, families = spectrum.get("k", 5), spectrum.get("which", ["LA", "SA"])
    for name, direction in config.get("directions", {}).items():
        if direction.get("kind") != "eigenvector":
            continue
        which, index = direction.get("which", "LA"), direction.get("index", 1)
        if which not in families:
            raise ConfigError(
                f"directions.{name}.which: '{which}' is not in hessian.spectrum.which {families}"
            )
        if index > k:
            raise ConfigError(f"directions.{name}.index: {index} exceeds hessian.spectrum.k = {k}")
    trace = block.get("trace", {})
    if trace.get("method", "auto") in ("auto", "xtrace") and trace.get("matvecs", 100) % 2:
        raise ConfigError(  # auto falls back to xtrace for models that are not piecewise linear
            f"hessian.trace.matvecs: xtrace needs an even number of products, got "
            f"{trace['matvecs']}"
        )
    if "runs" in block:
        _check_selection(config, "hessian", block)
    if "runs" in config.get("angles", {}):
        _check_selection(config, "angles", config["angles"])
    cosines = config.get("cosines", {})
    if cosines.get("directions"):
        _check_block(config, "cosines", None, cosines, ("directions",))


# What a synthetic stand-in imitates of each real source it may replace: the image shape, the
# classes and the split sizes, and the files under `root` that landscape/data.py reads (any one
# missing: the data is absent).
STAND_IN_SOURCES: dict[str, dict[str, Any]] = {
    "cifar10": {"shape": [3, 32, 32], "num_classes": 10, "n_train": 50000, "n_test": 10000},
    "cifar100": {"shape": [3, 32, 32], "num_classes": 100, "n_train": 50000, "n_test": 10000},
    "svhn": {"shape": [3, 32, 32], "num_classes": 10, "n_train": 73257, "n_test": 26032},
}
_LAYOUT_KEYS = ("shape", "num_classes", "n_train", "n_test")


def synthetic_layout(block: Mapping[str, Any]) -> dict[str, Any] | None:
    """``shape``, ``num_classes``, ``n_train``, ``n_test`` of a synthetic dataset block.

    Those of the source named by ``like``, replaced by the block's own keys; only the keys known
    are returned. None if ``like`` names no source in :data:`STAND_IN_SOURCES`.

    >>> synthetic_layout({"like": "cifar100", "n_train": 500})["n_train"]
    500
    """
    like = block.get("like")
    if like is not None and like not in STAND_IN_SOURCES:
        return None
    layout = copy.deepcopy(STAND_IN_SOURCES.get(like, {}))
    layout.update({k: block[k] for k in _LAYOUT_KEYS if block.get(k) is not None})
    return layout


def _missing_data(block: Mapping[str, Any]) -> str | None:
    """What of a real source's data is not there (the root, else its first missing file)."""
    root = block.get("root")
    if not root:
        return "root is not set"
    for name in data_files(block["source"]):
        path = Path(root).expanduser() / name
        if not path.is_file():
            return f"'{path}' is missing"
    return None


def stand_in_spec(block: Mapping[str, Any]) -> dict[str, Any]:
    """The synthetic dataset block that stands in for a real one: its source's layout, seed 0.

    ``root`` goes (the images do not come from there); ``max_train``, ``max_test``,
    ``subset_seed``, ``classes`` and any other key stay.

    >>> stand_in_spec({"source": "svhn", "root": "/x", "max_test": 100})["n_test"]
    26032
    """
    kept = {k: v for k, v in block.items() if k not in ("source", "root", "stand_in")}
    layout = synthetic_layout({"like": block["source"]})
    return {"source": "synthetic", "like": block["source"], **layout, "seed": 0, **kept}


def resolve_stand_ins(config: Mapping[str, Any]) -> list[str]:
    """Puts the synthetic stand-in in place of every ``stand_in: synthetic`` dataset without data.

    A block with ``stand_in: synthetic`` whose real files
    (:func:`~landscape.source_files.data_files` under ``root``) are all there becomes the block
    without ``stand_in``; one with any missing becomes :func:`stand_in_spec`.
    ``config["datasets"]`` is changed in place, before any spec is
    derived from it, so that every artifact's spec says which data it was computed on: when the
    real data appears, the specs change and everything reruns on it.

    Returns:
        One warning line per dataset replaced, naming its key and the missing path.

    Raises:
        ConfigError: ``stand_in`` on a source that has no stand-in.
    """
    warnings = []
    for name, block in config.get("datasets", {}).items():
        if block.get("stand_in") is None:
            continue
        source = block["source"]
        if source not in STAND_IN_SOURCES:
            raise ConfigError(
                f"datasets.{name}.stand_in: source '{source}' has no synthetic stand-in "
                f"(only {', '.join(STAND_IN_SOURCES)})"
            )
        real = {k: v for k, v in block.items() if k != "stand_in"}
        missing = _missing_data(real)
        if missing is None:
            config["datasets"][name] = real
            continue
        config["datasets"][name] = stand_in_spec(real)
        warnings.append(
            f"WARNING: datasets.{name}: {missing}: SYNTHETIC stand-in data of "
            f"{source}'s shapes is used instead (stand_in: synthetic); its results say "
            "nothing about the real data"
        )
    return warnings


def check_files(config: Mapping[str, Any]) -> None:
    """Checks that the local files the runs read exist: dataset roots and model weights.

    Only blocks some run uses are checked, so that a config may carry unused paper-scale blocks.
    Nothing is ever downloaded, so a missing folder is a config error, found before any job.

    Raises:
        ConfigError: naming the key, e.g. ``datasets.c10.root: directory '/x' does not exist``.
    """
    used = {
        (section, run[section])
        for run in config["runs"].values()
        for section in ("dataset", "model")
    }
    for section, name in sorted(used):
        block = config[f"{section}s"][name]
        if section == "dataset" and block["source"] not in ("digits", "synthetic"):
            root = block.get("root")
            if not root:
                raise ConfigError(
                    f"datasets.{name}.root: required for source '{block['source']}' "
                    "(a local folder; nothing is downloaded)"
                )
            if not Path(root).expanduser().is_dir():
                raise ConfigError(
                    f"datasets.{name}.root: directory '{root}' does not exist "
                    f"(source '{block['source']}' reads local files; nothing is downloaded)"
                )
        weights = block.get("weights") if section == "model" else None
        if weights and not Path(weights).expanduser().is_file():
            raise ConfigError(f"models.{name}.weights: file '{weights}' does not exist")


def check_duplicate_keys(paths: Sequence[str | Path]) -> None:
    """Refuses a YAML (or JSON) config file that gives one key twice in a mapping.

    YAML loaders keep the last value silently, so ``seed: 1`` then ``seed: 7`` would plan jobs
    with seed 7. Merge keys (``<<: *anchor``) may be overridden; they are not duplicates.

    Raises:
        ConfigError: e.g. ``directions.gx.seed: duplicate key at lines 12 and 14 of config.yaml``.
    """
    import yaml

    for path in paths:
        try:
            root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except (OSError, yaml.YAMLError):  # Snakemake itself reports unreadable files
            continue
        if root is not None:
            _check_duplicates(root, (), path, set())


def _check_duplicates(node, parts: tuple, path, seen: set[int]) -> None:
    import yaml

    if id(node) in seen:  # an alias: the anchored node was checked where it was defined
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, (*parts, i), path, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, name) in first:
                    raise ConfigError(
                        f"{_key_path([*parts, name])}: duplicate key at lines "
                        f"{first[key.tag, name]} and {line} of {path}"
                    )
                first[key.tag, name] = line
            _check_duplicates(value, (*parts, name), path, seen)


def check_finite(config: Any, parts: tuple = ()) -> None:
    """Refuses NaN and infinite numbers anywhere in the config: no key takes them.

    The schema's ranges let NaN through (every comparison with NaN is false), and a spec with
    NaN or inf cannot be written as JSON.

    >>> check_finite({"curves": {"c": {"lambda": {"min": float("-inf")}}}})
    Traceback (most recent call last):
    ...
    landscape.config.ConfigError: curves.c.lambda.min: -inf is not a finite number

    Raises:
        ConfigError: naming the key.
    """
    if isinstance(config, float) and not math.isfinite(config):
        raise ConfigError(f"{_key_path(parts)}: {config} is not a finite number")
    if isinstance(config, Mapping):
        for key, value in config.items():
            check_finite(value, (*parts, key))
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            check_finite(value, (*parts, i))


def drop_unset_options(config: dict[str, Any]) -> None:
    """Removes, in place, the speed options written out at their off value.

    ``augment: false`` of a tensor source (CIFAR, SVHN, synthetic) and ``train.precision: fp32``,
    ``train.channels_last: false``, ``train.eval_every: 1`` of a run: the schema gives them no
    default (a default would enter every spec), so writing one out would change the dataset block
    that curves, surfaces and Hessian jobs take as a parameter, and rerun them for nothing.

    >>> config = {"datasets": {"c": {"source": "cifar10", "augment": False},
    ...     "f": {"source": "imagefolder", "augment": False}},
    ...     "runs": {"r": {"train": {"epochs": 2, "precision": "fp32"}}}}
    >>> drop_unset_options(config); config["datasets"], config["runs"]["r"]["train"]
    ({'c': {'source': 'cifar10'}, 'f': {'source': 'imagefolder', 'augment': False}}, {'epochs': 2})
    """
    for block in config.get("datasets", {}).values():
        if _augment_off(block):
            del block["augment"]
    for run in config.get("runs", {}).values():
        train = run.get("train", {})
        for key in [k for k, v in train.items() if _train_off(k, v)]:
            del train[key]


def normalize_numbers(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Gives each number its key's type in the schema, in place: ``5.0`` -> ``5``, ``1`` -> ``1.0``.

    JSON schema accepts both spellings, but the canonical spec (and so Snakemake's rerun check
    and every artifact's ``spec``) would differ. Call it on a config that validates. Within
    ``oneOf`` alternatives only integral floats are made integers: an alternative that fails
    need not be the one that matched, and an integer is valid wherever ``5.0`` was one.

    >>> schema = {"type": "object", "properties": {"num": {"type": "integer"},
    ...     "min": {"type": "number"}, "e": {"oneOf": [{"const": "final"}, {"type": "integer"}]}}}
    >>> config = {"num": 5.0, "min": -1, "e": 3.0}
    >>> normalize_numbers(config, schema); config
    {'num': 5, 'min': -1.0, 'e': 3}
    """
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many(
        {
            "integer": lambda _, x: isinstance(x, int) and not isinstance(x, bool),
            "number": lambda _, x: isinstance(x, float),
        }
    )
    strict = validators.extend(Draft202012Validator, type_checker=checker)(schema)
    fixes = [
        (error.absolute_path, value)
        for error, alternative in _all_errors(strict.iter_errors(config))
        if (value := _as_schema_type(error, alternative)) is not None
    ]
    for where, value in fixes:
        *parents, last = where
        block = config
        for part in parents:
            block = block[part]
        block[last] = value


def _all_errors(errors, alternative: bool = False):
    """Every error with the errors of its alternatives, flagged as within an alternative."""
    for error in errors:
        yield error, alternative
        yield from _all_errors(error.context or (), True)


def _as_schema_type(error, alternative: bool) -> int | float | None:
    """The value a strict-type error's number should have, or None if it is no such error."""
    if error.validator != "type":
        return None
    types = error.validator_value
    types, value = (types if isinstance(types, list) else [types]), error.instance
    if isinstance(value, float) and value.is_integer() and "integer" in types:
        return int(value)
    if type(value) is int and "number" in types and "integer" not in types and not alternative:
        return float(value)
    return None


# Samples of the fixed-size sources: (train, test); digits depends on test_fraction.
_SPLIT_SIZES = {
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "svhn": (73257, 26032),
    "flowers102": (1020, 6149),
}


def split_sizes(dataset: Mapping[str, Any]) -> dict[str, int | None]:
    """Samples in the train and test splits of a dataset block; None where only the data knows.

    With ``classes`` the sizes are those of every class: an upper bound (for the cost check).

    >>> split_sizes({"source": "digits"}), split_sizes({"source": "cifar10", "max_test": 500})
    ({'train': 1347, 'test': 450}, {'train': 50000, 'test': 500})
    """
    source = dataset["source"]
    if source == "digits":  # scikit-learn's split rounds the test fraction up
        test = math.ceil(1797 * dataset.get("test_fraction", 0.25))
        sizes: dict[str, int | None] = {"train": 1797 - test, "test": test}
    elif source == "synthetic":
        layout = synthetic_layout(dataset) or {}
        sizes = {"train": layout.get("n_train"), "test": layout.get("n_test")}
    elif source in _SPLIT_SIZES:
        train, test = _SPLIT_SIZES[source]
        if source == "flowers102" and dataset.get("train_with_val"):
            train *= 2
        sizes = {"train": train, "test": test}
    else:
        sizes = {"train": None, "test": None}
    for split in ("train", "test"):
        limit = dataset.get(f"max_{split}")
        if limit is not None:
            sizes[split] = limit if sizes[split] is None else min(limit, sizes[split])
    return sizes


DEFAULT_MAX_FORWARD_PASSES = 100_000_000


def check_cost(config: Mapping[str, Any], shards: int | None = None) -> None:
    """Refuses a curve or surface whose jobs would each forward too many examples.

    A job evaluates its points (a curve's lambdas, a surface shard's share of x.num * y.num) on
    every sample of its splits, plus ``bn_batches * batch_size`` training samples per point when
    BN statistics are recomputed. Image folders without ``max_train``/``max_test`` have no known
    size and are not estimated.

    Args:
        config: the validated config.
        shards: surface shards per surface, if the command line overrides ``surface_shards``.

    Raises:
        ConfigError: naming the grid keys, with the estimate and the limit.
    """
    limit = config.get("limits", {}).get("max_forward_passes_per_job", DEFAULT_MAX_FORWARD_PASSES)
    if limit is None:
        return
    shards = shards or config.get("surface_shards", 4)
    for family, axes in (("curves", ("lambda",)), ("surfaces", ("x", "y"))):
        for name, block in config.get(family, {}).items():
            nums = [block[axis]["num"] for axis in axes]
            points = math.prod(nums)
            parts = 1 if family == "curves" else min(shards, points)
            per_job = math.ceil(points / parts)
            datasets = {config["runs"][run]["dataset"] for run in block_runs(config, block)}
            bn_mode = resolve_bn_mode(config, family, name)
            per_point = max(
                (_samples_per_point(block, bn_mode, config["datasets"][d]) for d in datasets),
                default=0,
            )
            if per_job * per_point > limit:
                keys = " and ".join(f"{family}.{name}.{axis}.num" for axis in axes)
                grid = " x ".join(map(str, nums))
                jobs = f" in {parts} shard{'s' * (parts > 1)}" if family == "surfaces" else ""
                raise ConfigError(
                    f"{keys}: {grid} points{jobs} is {per_job} points per job, about "
                    f"{per_job * per_point:.2g} forward passes (examples) per job, over "
                    f"limits.max_forward_passes_per_job = {limit:.2g} (use fewer points"
                    f"{', more surface_shards' if family == 'surfaces' else ''} "
                    "or raise the limit)"
                )


def _samples_per_point(block: Mapping[str, Any], bn_mode: str, dataset: Mapping[str, Any]) -> int:
    """Examples forwarded at one grid point: the splits, then the BN re-estimation batches."""
    sizes = split_sizes(dataset)
    samples = sum(sizes[split] or 0 for split in block["splits"])
    if bn_mode == "recompute":
        bn = block["bn_batches"] * block["batch_size"]
        samples += bn if sizes["train"] is None else min(bn, sizes["train"])
    return samples


def hdf5_environment(config: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables every job needs for the config's ``hdf5_file_locking``.

    >>> hdf5_environment({"hdf5_file_locking": False}), hdf5_environment({})
    ({'HDF5_USE_FILE_LOCKING': 'FALSE'}, {})
    """
    return {} if config.get("hdf5_file_locking", True) else {"HDF5_USE_FILE_LOCKING": "FALSE"}


def schema_error(config: Mapping[str, Any], schema: Mapping[str, Any]) -> str | None:
    """The most relevant violation of the JSON schema as one line naming its key path.

    Snakemake's ``validate`` reports a violation with a dump of the schema; this gives the
    message the workflow shows instead.

    Args:
        config: the config (defaults may be filled in or not).
        schema: the parsed ``schemas/config.schema.yaml``.

    Returns:
        e.g. ``runs.mlp.train.epochs: -1 is less than the minimum of 0``, or None if valid.

    >>> schema = {"type": "object", "additionalProperties": False,
    ...           "properties": {"n": {"type": "integer", "minimum": 1}}}
    >>> schema_error({"n": 0}, schema), schema_error({"m": 1}, schema)
    ('n: 0 is less than the minimum of 1', 'm: unknown key (known: n)')
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match, relevance

    def key(error):  # an unevaluated property is mostly the echo of another failure
        return (error.validator != "unevaluatedProperties", *relevance(error))

    error = best_match(Draft202012Validator(schema).iter_errors(config), key=key)
    if error is None:
        return None
    path = _key_path(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        names = re.findall(r"'([^']*)'", error.message.partition("(")[2])
        unknown = ", ".join(_key_path([*error.absolute_path, n]) for n in names)
        known = sorted(error.schema.get("properties", {}))
        hint = f" (known: {', '.join(known)})" if error.validator == "additionalProperties" else ""
        return f"{unknown}: unknown key{hint}"
    if "propertyNames" in error.relative_schema_path:
        rule = error.schema.get("description", f"must match {error.schema.get('pattern')}")
        return f"{path}: name {error.instance!r} is not allowed ({rule})"
    parent = error.parent
    if parent is not None and parent.validator in ("oneOf", "anyOf"):
        what, outer = "", parent
        while outer is not None and not what:  # the nearest alternative with a description
            what = outer.schema.get("description", "") if isinstance(outer.schema, dict) else ""
            outer = outer.parent
        what = f" ({what})" if what else ""
        return f"{_key_path(parent.absolute_path)}: {parent.instance!r} is not valid{what}"
    return f"{path}: {error.message}"


def _key_path(parts) -> str:
    """``runs.mlp.train.epochs``, list indices as ``[i]``; ``<config>`` for the root."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<config>"


def _check_target(config: Mapping[str, Any], name: str) -> None:
    """A checkpoint direction's target exists: its run, and its epoch in every run it is read from.

    Without ``target.run`` the target is a checkpoint of each run the direction is made for.
    """
    key = f"directions.{name}.target"
    target = config["directions"][name].get("target", {})
    run, epoch = target.get("run"), target.get("epoch", "final")
    if run is not None and run not in config["runs"]:
        raise ConfigError(f"{key}.run: '{run}' is not a key of runs")
    if epoch == "final":
        return
    for other in [run] if run is not None else direction_runs(config, name):
        if epoch not in checkpoint_epochs(config["runs"][other]["train"]):
            raise ConfigError(
                f"{key}.epoch: run '{other}' has no checkpoint at epoch {epoch} "
                f"(add it to runs.{other}.train.checkpoints)"
            )


def _check_closest_to(config: Mapping[str, Any], name: str) -> None:
    """``closest_to`` names another noise-comparable direction, without a cycle; ``match`` has
    a ``closest_to`` whose norm it takes."""
    key = f"directions.{name}"
    directions = config["directions"]
    block = directions[name]
    if "closest_to" not in block:
        if block.get("normalization") == "match":
            raise ConfigError(
                f"{key}.normalization: match needs closest_to (the direction whose norm it takes)"
            )
        return
    kind = block.get("kind", "noise")
    if kind != "noise":
        raise ConfigError(f"{key}.closest_to: applies to kind noise only, not {kind!r}")
    chain = [name]
    while "closest_to" in directions[chain[-1]]:
        ref = directions[chain[-1]]["closest_to"]["direction"]
        if ref not in directions:
            if len(chain) == 1:
                raise ConfigError(f"{key}.closest_to.direction: '{ref}' is not a key of directions")
            return  # that direction's own check names it
        if ref == name and len(chain) == 1:
            raise ConfigError(f"{key}.closest_to.direction: '{ref}' is the direction itself")
        if ref == name:
            cycle = " -> ".join([*chain, ref])
            raise ConfigError(f"{key}.closest_to.direction: '{chain[1]}' leads back: {cycle}")
        if ref in chain:
            return  # a cycle that does not pass here: its members' checks name it
        chain.append(ref)


def _check_phi_run(config: Mapping[str, Any], name: str) -> None:
    """``phi_init: run`` names an existing run of the same model, and an epoch it has."""
    block = config["directions"][name]
    if not _starts_at_run(block):
        return
    key = f"directions.{name}"
    other = block.get("phi_run")
    if other is None:
        raise ConfigError(
            f"{key}.phi_run: required with phi_init: run (the run whose checkpoint phi starts at)"
        )
    if other not in config["runs"]:
        raise ConfigError(f"{key}.phi_run: '{other}' is not a key of runs")
    for run in direction_runs(config, name):
        if _architecture(config, run) != _architecture(config, other):
            raise ConfigError(
                f"{key}.phi_run: run '{other}' (model '{config['runs'][other]['model']}') has "
                f"another architecture than run '{run}' (model '{config['runs'][run]['model']}') "
                "that the direction is made for; phi starts at a point of the same parameters"
            )
    epoch = block.get("phi_epoch", "final")
    if epoch != "final" and epoch not in checkpoint_epochs(config["runs"][other]["train"]):
        raise ConfigError(
            f"{key}.phi_epoch: run '{other}' has no checkpoint at epoch {epoch} "
            f"(add it to runs.{other}.train.checkpoints)"
        )


def _starts_at_run(block: Mapping[str, Any]) -> bool:
    """Whether a direction block is Algorithm 2 started at another run (``phi_init: run``)."""
    return (
        block.get("kind") == "mined"
        and block.get("algorithm", "wpeak") == "vvv"
        and block.get("phi_init", "theta") == "run"
    )


def _architecture(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """A run's model block without what only initializes it (``weights``, ``bn_weight_init``)."""
    model = config["models"][config["runs"][run]["model"]]
    return {k: v for k, v in model.items() if k not in ("weights", "bn_weight_init")}


def direction_runs(config: Mapping[str, Any], name: str) -> list[str]:
    """The runs a direction is made for: those of every block that reads it, in config order.

    >>> direction_runs({"runs": {"a": {}, "b": {}}, "directions": {"d": {}},
    ...     "curves": {"c": {"direction": "d", "runs": ["b"]}}}, "d")
    ['b']
    """
    readers = (("curves", "direction"), ("soa", "direction"), ("surfaces", "directions"))
    users = [
        block
        for family, key in readers
        for block in config.get(family, {}).values()
        if name in (block[key] if isinstance(block[key], list) else [block[key]])
    ]
    cosines = config.get("cosines", {})
    if name in cosines.get("directions", []):
        users.append(cosines)
    runs = {run for block in users for run in block_runs(config, block)}
    return [run for run in config["runs"] if run in runs]


def _check_block(
    config, family: str, name: str | None, block: Mapping, keys: Sequence[str]
) -> None:
    key = family if name is None else f"{family}.{name}"
    for k in keys:
        refs = block[k] if isinstance(block[k], list) else [block[k]]
        for ref in refs:
            if ref not in config.get("directions", {}):
                raise ConfigError(f"{key}.{k}: '{ref}' is not a key of directions")
    for axis in ("lambda", "x", "y"):
        grid = block.get(axis)
        if grid and (grid["min"] > grid["max"] or (grid["min"] == grid["max"] and grid["num"] > 1)):
            raise ConfigError(
                f"{key}.{axis}: min ({grid['min']}) must be less than max ({grid['max']})"
            )
    _check_selection(config, key, block)


def _check_selection(config: Mapping[str, Any], key: str, block: Mapping[str, Any]) -> None:
    """The runs and epochs that a block selects exist."""
    for run in block_runs(config, block):
        if run not in config["runs"]:
            raise ConfigError(f"{key}.runs: '{run}' is not a key of runs")
        if block["epochs"] != "final":
            have = checkpoint_epochs(config["runs"][run]["train"])
            missing = sorted(set(block["epochs"]) - set(have))
            if missing:
                raise ConfigError(
                    f"{key}.epochs: run '{run}' has no checkpoint at epochs {missing} "
                    f"(add them to runs.{run}.train.checkpoints)"
                )


def check_theory(config: Mapping[str, Any]) -> None:
    """The runs and epochs that the ``theory`` block (A9) selects exist."""
    _check_selection(config, "theory", config.get("theory", {"runs": [], "epochs": "final"}))


def block_runs(config: Mapping[str, Any], block: Mapping[str, Any]) -> list[str]:
    """The runs a block with a ``runs`` selection ("all" or a list) is evaluated on."""
    runs = block["runs"]
    return list(config["runs"]) if runs == "all" else list(runs)


def block_epochs(config: Mapping[str, Any], block: Mapping[str, Any], run: str) -> list[int]:
    """The checkpoint epochs of ``run`` that a block's ``epochs`` selection names."""
    epochs = block["epochs"]
    return [final_epoch(config, run)] if epochs == "final" else sorted(epochs)


def selected_runs(config: Mapping[str, Any], family: str, name: str) -> list[str]:
    """The runs a curve or surface is evaluated on."""
    return block_runs(config, config[family][name])


def selected_epochs(config: Mapping[str, Any], family: str, name: str, run: str) -> list[int]:
    """The checkpoint epochs of ``run`` a curve or surface is evaluated at."""
    return block_epochs(config, config[family][name], run)


def hessian_spec(config: Mapping[str, Any], part: str) -> dict[str, Any]:
    """What one curvature artifact (``spectrum``, ``density`` or ``trace``) depends on.

    >>> hessian_spec({"hessian": {"samples": 8, "runs": "all", "trace": {"matvecs": 9},
    ...     "density": {"steps": 3}}}, "trace")
    {'samples': 8, 'trace': {'matvecs': 9}}
    """
    return {**hessian_evaluation(config), part: config["hessian"].get(part, {})}


def hessian_evaluation(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``hessian`` block's evaluation set: split, samples, batch size, BN mode, dtype."""
    block = config["hessian"]
    return {k: v for k, v in block.items() if k not in ("runs", "epochs", *HESSIAN_PARTS)}


def soa_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What a second-order approximation (V14) depends on: its block and the evaluation set."""
    return {**hessian_evaluation(config), **evaluation_spec(config, "soa", name)}


def direction_references(
    config: Mapping[str, Any], direction: str, run: str, epoch: int | None = None
) -> dict[str, tuple[str, int]]:
    """Other checkpoints a direction of ``run`` at ``epoch`` is derived from:
    ``{role: (run, epoch)}``.

    ``phi_init: run`` (Algorithm 2) starts at ``phi_run``'s checkpoint ``phi_epoch``; without
    ``phi_epoch`` at ``epoch`` (theta's) if ``phi_run`` has a checkpoint there, else at its last
    (also for ``epoch`` None). A direction that ``closest_to`` names is no checkpoint: see
    ``get_direction_closest`` in ``rules/common.smk``.

    >>> cfg = {"runs": {"a": {"train": {"epochs": 5}}}, "directions": {
    ...     "init": {"kind": "special", "of": "theta_0"},
    ...     "to_end": {"kind": "checkpoint", "target": {"run": None, "epoch": "final"}}}}
    >>> direction_references(cfg, "init", "a"), direction_references(cfg, "to_end", "a")
    ({'theta_0': ('a', 0)}, {'target': ('a', 5)})
    """
    spec = config["directions"][direction]
    if spec.get("kind") == "special" and spec.get("of") == "theta_0":
        return {"theta_0": (run, 0)}
    if spec.get("kind") == "checkpoint":
        target = spec.get("target", {})
        other = target.get("run") or run
        target_epoch = target.get("epoch", "final")
        final = final_epoch(config, other)
        return {"target": (other, final if target_epoch == "final" else target_epoch)}
    if _starts_at_run(spec):
        other = spec["phi_run"]
        return {"phi_init": (other, phi_epoch(config, spec, other, epoch))}
    if spec.get("kind") == "pca":  # the run's other checkpoints (landscape.analysis_config)
        from landscape.analysis_config import pca_references

        return pca_references(config, spec, run, epoch)
    return {}


def phi_epoch(
    config: Mapping[str, Any], spec: Mapping[str, Any], other: str, epoch: int | None
) -> int:
    """The epoch of ``other``'s checkpoint where ``phi_init: run`` starts (see
    :func:`direction_references`)."""
    start = spec.get("phi_epoch")
    if start is None:
        have = checkpoint_epochs(config["runs"][other]["train"])
        start = epoch if epoch in have else "final"
    return final_epoch(config, other) if start == "final" else start


def run_wildcards(config: Mapping[str, Any], run: str) -> dict[str, str]:
    """``{"dataset", "model", "run"}`` that place a run under ``results/``."""
    spec = config["runs"][run]
    return {"dataset": spec["dataset"], "model": spec["model"], "run": run}


# Training options off by default that no run spec holds where off (see run_spec).
_TRAIN_OFF = {"precision": "fp32", "channels_last": False, "eval_every": 1}
_IMAGE_FOLDERS = ("flowers102", "imagefolder")  # their augment has a schema default


def _train_off(key: str, value: Any) -> bool:
    """Whether ``train.<key>: value`` is a speed option at its off value (no spec holds it)."""
    return key in _TRAIN_OFF and value == _TRAIN_OFF[key] and type(value) is type(_TRAIN_OFF[key])


def _augment_off(dataset: Mapping[str, Any]) -> bool:
    """Whether a dataset block says ``augment: false`` where the schema gives it no default."""
    return dataset.get("augment") is False and dataset.get("source") not in _IMAGE_FOLDERS


def run_spec(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """Everything a run's checkpoints depend on: dataset, model and training blocks.

    ``subset_seed`` is left out of the dataset unless ``max_train`` or ``max_test`` draws a
    subset with it: training reads every sample otherwise, so changing it retrains nothing.
    A fine-tuning run's ``train.init`` holds the epoch it starts from (``final`` resolved) and
    the run spec of the run it starts from, so changing that run retrains this one. The speed
    options ``train.precision``, ``train.channels_last``, ``train.eval_every`` and a tensor
    source's ``augment`` are left out where off, as runs were before they existed: writing them
    out retrains nothing.

    >>> config = {"runs": {"r": {"dataset": "d", "model": "m", "train": {"epochs": 2}}},
    ...     "datasets": {"d": {"source": "digits", "subset_seed": 3}}, "models": {"m": {}}}
    >>> run_spec(config, "r")["dataset"]
    {'source': 'digits'}
    """
    spec = config["runs"][run]
    train = {
        k: v
        for k, v in spec["train"].items()
        if k != "checkpoints" and not _train_off(k, v)
    }
    source = init_source(config, run)
    if source is not None:
        train["init"] = {"run": source[0], "epoch": source[1], "spec": run_spec(config, source[0])}
    dataset = dict(config["datasets"][spec["dataset"]])
    if dataset.get("max_train") is None and dataset.get("max_test") is None:
        dataset.pop("subset_seed", None)
    if _augment_off(dataset):
        dataset.pop("augment")
    return {
        "run": run,
        "dataset_name": spec["dataset"],
        "dataset": dataset,
        "model_name": spec["model"],
        "model": config["models"][spec["model"]],
        "train": train,
    }


# Keys of a direction block that matter for each kind (besides the transforms in _TRANSFORM_KEYS).
_KIND_KEYS = {
    "noise": ("distribution", "seed", "closest_to", "bn_states"),
    "special": ("of", "seed"),
    "gradient": ("batches", "batch_size"),
    "checkpoint": ("target", "bn_states"),
    "eigenvector": ("which", "index"),
    "mined": (
        "algorithm", "epochs", "lr", "alpha", "gamma", "seed", "batches", "batch_size",
        "phi_init", "init_seed", "phi_run", "phi_epoch",
    ),
    "pca": ("component", "checkpoints"),
}
_TRANSFORM_KEYS = ("kind", "sign", "sign_ratio", "normalization", "bias_bn", "group", "scale")


def direction_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What a direction depends on: its kind's keys and the transforms, nothing else.

    A key that another kind (or another mining algorithm, or another ``phi_init``) reads does
    not change a direction's spec; the kind's default normalization and ``bias_bn`` are filled
    in. ``closest_to`` holds the spec of the direction it names as ``reference``, so that a
    change of the reference reruns it.

    >>> direction_spec({"directions": {"d": {"kind": "checkpoint", "target": {"epoch": 0},
    ...     "seed": 3, "index": 1, "sign": "none"}}}, "d")  # doctest: +NORMALIZE_WHITESPACE
    {'kind': 'checkpoint', 'target': {'epoch': 0}, 'sign': 'none', 'normalization': 'raw',
     'bias_bn': 'raw'}
    >>> direction_spec({"directions": {"d": {"kind": "checkpoint", "seed": 3,
    ...     "sign": "consistent"}}}, "d")["seed"]
    3
    """
    block = config["directions"][name]
    kind = block.get("kind", "noise")
    keys = set(_TRANSFORM_KEYS) | set(_KIND_KEYS.get(kind, ()))
    if block.get("sign") == "consistent":
        keys.add("seed")
    start = block.get("phi_init", "theta") if block.get("algorithm", "wpeak") == "vvv" else None
    if start is None:
        keys -= {"phi_init"}  # Algorithm 2's start
    if start != "init":
        keys.discard("init_seed")
    if start != "run":
        keys -= {"phi_run", "phi_epoch"}
    spec = {k: v for k, v in block.items() if k in keys}
    if "closest_to" in spec:
        reference = spec["closest_to"]["direction"]
        spec["closest_to"] = {
            **spec["closest_to"],
            "reference": direction_spec(config, reference),
        }
    normalization, bias_bn = transform_defaults(kind)
    spec.setdefault("normalization", normalization)
    spec.setdefault("bias_bn", bias_bn)
    return spec


def transform_defaults(kind: str) -> tuple[str, str]:
    """The ``(normalization, bias_bn)`` of a direction kind that sets neither.

    ``("filter", "zero")`` for noise (Li et al. 2018); ``("norm", "raw")`` for eigenvectors (the
    unit vector scaled to ``||theta||``, direction kept); ``("raw", "raw")`` otherwise. They are
    written into the spec (:func:`direction_spec`), so changing a default reruns what it changes.

    >>> transform_defaults("eigenvector"), transform_defaults("mined")
    (('norm', 'raw'), ('raw', 'raw'))
    """
    normalization = {"noise": "filter", "eigenvector": "norm"}.get(kind, "raw")
    return normalization, "zero" if kind == "noise" else "raw"


def evaluation_spec(config: Mapping[str, Any], family: str, name: str) -> dict[str, Any]:
    """What a curve's or surface's values depend on: its block without run and epoch selection
    (and without ``plot``, which draws no value).

    ``bn_mode: auto`` is replaced by the mode it resolves to (:func:`resolve_bn_mode`), so a
    curve that took the old default ``recompute`` keeps its spec and is not rerun. ``evaluation``
    is the top-level block overridden key by key by the block's own (:func:`evaluation_options`),
    kept only where it differs from the defaults, so that artifacts evaluated the default way
    keep their spec.
    """
    spec = {
        k: v
        for k, v in config[family][name].items()
        if k not in ("runs", "epochs", "plot", "evaluation")
    }
    if "bn_mode" in spec:
        spec["bn_mode"] = resolve_bn_mode(config, family, name)
    options = evaluation_options(config, family, name) if family in EVALUATED else {}
    if options:
        spec["evaluation"] = options
    return spec


# Defaults of the evaluation options (schema: evaluation); only values that differ enter a spec.
EVALUATED = ("curves", "surfaces")  # the families the grid engine evaluates with them
EVALUATION_DEFAULTS = {
    "precision": "fp32",
    "channels_last": False,
    "compile": False,
    "bn_recompute": "eager",
}


def evaluation_options(config: Mapping[str, Any], family: str, name: str) -> dict[str, Any]:
    """The non-default evaluation options of a curve or surface: the top-level ``evaluation``
    block, then the block's ``evaluation`` (its keys win).

    >>> config = {"evaluation": {"precision": "bf16"}, "curves": {"c": {"evaluation": {}}}}
    >>> evaluation_options(config, "curves", "c")
    {'precision': 'bf16'}
    >>> config["curves"]["c"]["evaluation"] = {"precision": "fp32", "compile": True}
    >>> evaluation_options(config, "curves", "c")
    {'compile': True}
    """
    merged = {**config.get("evaluation", {}), **config[family][name].get("evaluation", {})}
    return {k: v for k, v in merged.items() if EVALUATION_DEFAULTS.get(k, object()) != v}


# The curve BN mode of the function whose curvature hessian.bn_mode describes: eval-mode BN
# normalizes by theta's running statistics at every point (No UpBN); batch statistics follow the
# parameters, as statistics re-estimated at each point do (UpBN).
CURVE_BN_MODE_OF_HESSIAN = {"eval": "keep", "train": "recompute"}


def direction_bn_mode(config: Mapping[str, Any], name: str) -> str | None:
    """The curve BN mode of the loss a direction was derived from; None if it has no such loss.

    Eigenvectors are those of the Hessian of ``hessian.bn_mode``; the gradient and the mining
    algorithms differentiate the eval-mode loss (theta's running statistics), whose curve is
    ``keep``. Noise, special and checkpoint directions are not derived from a loss.

    >>> direction_bn_mode({"directions": {"pe1": {"kind": "eigenvector"}}}, "pe1")
    'keep'
    """
    kind = config["directions"][name].get("kind", "noise")
    if kind == "eigenvector":
        return CURVE_BN_MODE_OF_HESSIAN[config.get("hessian", {}).get("bn_mode", "eval")]
    return "keep" if kind in ("gradient", "mined") else None


def resolve_bn_mode(config: Mapping[str, Any], family: str, name: str) -> str:
    """A curve's or surface's BN mode: its ``bn_mode``, or for ``auto`` its directions' mode.

    ``auto`` evaluates along a direction derived from a loss (eigenvector, gradient, mined) the
    function that loss is: ``keep`` for the eval-mode Hessian (its curvature is the curve's
    second derivative), ``recompute`` for batch statistics; ``recompute`` (UpBN, the papers'
    default) along directions of no loss, e.g. Gaussian ones.

    Raises:
        ConfigError: ``auto`` with directions of two BN modes, naming the block's ``bn_mode``.
    """
    block = config[family][name]
    mode = block.get("bn_mode", "auto")
    if mode != "auto":
        return mode
    names = block["directions"] if "directions" in block else [block["direction"]]
    modes = {d: m for d in names if (m := direction_bn_mode(config, d)) is not None}
    if len(set(modes.values())) > 1:
        found = ", ".join(f"{d} ({m})" for d, m in modes.items())
        raise ConfigError(
            f"{family}.{name}.bn_mode: auto cannot follow directions derived from losses with "
            f"different BN modes: {found}; set bn_mode to keep or recompute"
        )
    return next(iter(modes.values()), "recompute")


# --------------------------------------------------------------------------- sweeps

# Direction kinds a sweep builds from its checkpoint alone (special theta_0 also reads the run's
# epoch-0 checkpoint, gradient the dataset the sweep evaluates on).
SWEEP_KINDS = ("noise", "special", "gradient")
# Every key of a direction block.
DIRECTION_KEYS = frozenset(_TRANSFORM_KEYS).union(*_KIND_KEYS.values())
SWEEP_PLOT_KINDS = ("grid", "ratio")


def sweep_variants(
    base: Mapping[str, Any], vary: Mapping[str, Sequence[Any]], where: str = "vary"
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The variants of a sweep: ``(values, direction block)`` for every combination of ``vary``.

    The combinations are the cartesian product of the ``vary`` lists in their order, the first
    key varying slowest (``itertools.product``); each block is ``base`` updated with its values.

    >>> [v for v, _ in sweep_variants({"seed": 1}, {"sign": ["none", "consistent"],
    ...     "distribution": ["gaussian", "laplace"]})]  # doctest: +NORMALIZE_WHITESPACE
    [{'sign': 'none', 'distribution': 'gaussian'}, {'sign': 'none', 'distribution': 'laplace'},
     {'sign': 'consistent', 'distribution': 'gaussian'},
     {'sign': 'consistent', 'distribution': 'laplace'}]

    Raises:
        ConfigError: for a key that is no direction key, or an empty list, naming
            ``{where}.{key}``.
    """
    import itertools

    for key, values in vary.items():
        if key not in DIRECTION_KEYS:
            raise ConfigError(
                f"{where}.{key}: not a key of a direction block (known: "
                f"{', '.join(sorted(DIRECTION_KEYS))})"
            )
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
    keys = list(vary)
    return [
        (dict(zip(keys, combo, strict=True)), {**base, **dict(zip(keys, combo, strict=True))})
        for combo in itertools.product(*(vary[k] for k in keys))
    ]


def variant_label(values: Mapping[str, Any]) -> str:
    """A variant's label: ``key=value`` pairs in ``vary`` order, comma-separated.

    >>> variant_label({"distribution": "laplace", "sign": "consistent", "sign_ratio": 0.5})
    'distribution=laplace,sign=consistent,sign_ratio=0.5'
    """
    return ",".join(
        f"{k}={v if isinstance(v, str) else canonical(v)}" for k, v in values.items()
    )


def variant_direction_spec(block: Mapping[str, Any]) -> dict[str, Any]:
    """What one variant's direction depends on: :func:`direction_spec` of its block."""
    return direction_spec({"directions": {"variant": dict(block)}}, "variant")


def sweep_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What a sweep's values depend on (the spec of ``compute_sweep``).

    Its block without run and epoch selection, ``plot`` and ``id``; ``base`` reduced to the
    keys some variant's direction depends on; ``order``, the ``vary`` keys in config order
    (canonical JSON sorts mapping keys); and ``variants``, the :func:`direction_spec` of every
    variant's direction in sweep order, so that a change of any direction reruns the sweep.
    """
    block = config["sweeps"][name]
    spec = {k: v for k, v in block.items() if k not in ("runs", "epochs", "plot", "id")}
    variants = [
        variant_direction_spec(b) for _, b in sweep_variants(block["base"], block["vary"])
    ]
    relevant = set().union(*variants)
    spec["base"] = {k: v for k, v in block["base"].items() if k in relevant}
    spec.setdefault("bn_mode", "recompute")
    spec["order"] = list(block["vary"])
    spec["variants"] = variants
    return spec


def sweep_references(
    config: Mapping[str, Any], name: str, run: str
) -> dict[str, tuple[str, int]]:
    """Other checkpoints a sweep of ``run`` reads: ``{"theta_0": (run, 0)}`` if a variant is
    the special direction ``theta_0``, else nothing."""
    block = config["sweeps"][name]
    for _, spec in sweep_variants(block["base"], block["vary"]):
        if spec.get("kind") == "special" and spec.get("of") == "theta_0":
            return {"theta_0": (run, 0)}
    return {}


def check_sweeps(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Checks every ``sweeps`` block and gives its ``vary`` numbers their schema type, in place.

    Each variant (``base`` updated with its ``vary`` values) must be a valid ``directions``
    block of a kind a sweep builds (:data:`SWEEP_KINDS`, no ``closest_to``); ``plot`` names
    ``vary`` keys and an evaluated split; runs, epochs and the lambda grid exist as for curves;
    the sweep's job stays under ``limits.max_forward_passes_per_job``.

    Raises:
        ConfigError: naming the key, e.g. ``sweeps.a1.vary.distrib``.
    """
    for name, block in config.get("sweeps", {}).items():
        key = f"sweeps.{name}"
        _check_block(config, "sweeps", name, block, ())
        variants = sweep_variants(block["base"], block["vary"], f"{key}.vary")
        if len(variants) != len({variant_label(v) for v, _ in variants}):
            raise ConfigError(f"{key}.vary: a list repeats a value (variants must differ)")
        for values, spec in variants:
            _check_variant(schema, key, values, spec)
        _normalize_vary(block, schema)
        _check_sweep_plot(key, block)
        _check_sweep_cost(config, name, len(variants))


def _direction_validator(schema: Mapping[str, Any]):
    from jsonschema import Draft202012Validator

    return Draft202012Validator({"$defs": schema["$defs"], **schema["$defs"]["direction"]})


def _check_variant(schema, key: str, values: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """One variant's direction block is valid and of a kind a sweep can build."""
    from jsonschema.exceptions import best_match

    error = best_match(_direction_validator(schema).iter_errors(dict(spec)))
    if error is not None:
        part = next(iter(error.absolute_path), None)
        if part is None and error.validator == "additionalProperties":
            part = re.findall(r"'([^']*)'", error.message)[0]
        where = f"{key}.vary.{part}" if part in values else f"{key}.base.{part}"
        raise ConfigError(f"{where}: {error.message} (in variant {variant_label(values)})")
    kind = spec.get("kind", "noise")
    if kind not in SWEEP_KINDS:
        where = f"{key}.vary.kind" if "kind" in values else f"{key}.base.kind"
        raise ConfigError(
            f"{where}: a sweep builds directions of kinds {list(SWEEP_KINDS)} only, not "
            f"{kind!r} (make it a directions block and a curve)"
        )
    if "closest_to" in spec:
        raise ConfigError(f"{key}.base.closest_to: not available in a sweep")


def _normalize_vary(block: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Each ``vary`` value with its direction key's type (``0`` -> ``0.0`` for sign_ratio)."""
    wrapped = {"$defs": schema["$defs"], **schema["$defs"]["direction"]}
    for k, values in block["vary"].items():
        for i, value in enumerate(values):
            one = {k: value}
            normalize_numbers(one, wrapped)
            values[i] = one[k]


def _check_sweep_plot(key: str, block: Mapping[str, Any]) -> None:
    plot = block.get("plot", {})
    for role in ("rows", "cols", "lines", "x", "average"):
        value = plot.get(role)
        if value is None:
            continue
        if value not in block["vary"]:
            raise ConfigError(
                f"{key}.plot.{role}: {value!r} is not a key of {key}.vary "
                f"(keys: {', '.join(block['vary'])})"
            )
    roles = ("rows", "cols", "lines", "average")
    placed = [plot.get(r) for r in roles if plot.get(r) is not None]
    if len(placed) != len(set(placed)):
        raise ConfigError(f"{key}.plot: rows, cols, lines and average must name different keys")
    split = plot.get("metric", "test/error").partition("/")[0]
    if split not in block["splits"]:
        raise ConfigError(
            f"{key}.plot.metric: split {split!r} is not evaluated ({key}.splits: "
            f"{block['splits']})"
        )


def _check_sweep_cost(config: Mapping[str, Any], name: str, variants: int) -> None:
    """A sweep job evaluates ``variants * lambda.num`` points: refused past the limit."""
    limit = config.get("limits", {}).get("max_forward_passes_per_job", DEFAULT_MAX_FORWARD_PASSES)
    if limit is None:
        return
    block = config["sweeps"][name]
    bn_mode = block.get("bn_mode", "recompute")
    datasets = {config["runs"][run]["dataset"] for run in block_runs(config, block)}
    per_point = max(
        (_samples_per_point(block, bn_mode, config["datasets"][d]) for d in datasets), default=0
    )
    points = variants * block["lambda"]["num"]
    if points * per_point > limit:
        raise ConfigError(
            f"sweeps.{name}.lambda.num: {variants} variants x {block['lambda']['num']} points is "
            f"about {points * per_point:.2g} forward passes (examples) in one job, over "
            f"limits.max_forward_passes_per_job = {limit:.2g} (vary less, use fewer points or "
            "raise the limit)"
        )


# --------------------------------------------------------------------------- pairs (A7, A8)

PAIR_TWO_RUNS = ("statistics", "interpolation", "ssr")


def pair_input_name(index: int, epoch: int) -> str:
    """Input name of the checkpoint of a pair block's ``runs[index]`` at ``epoch``.

    >>> pair_input_name(1, 30)
    'run1_epoch30'
    """
    return f"run{index}_epoch{epoch}"


def _pair_epoch(config: Mapping[str, Any], run: str, epoch: int | str) -> int:
    return final_epoch(config, run) if epoch == "final" else epoch


def _pair_init(config: Mapping[str, Any], block: Mapping[str, Any]) -> tuple[str, int]:
    init = block.get("init")
    if init is None:
        return block["runs"][0], 0
    return init["run"], _pair_epoch(config, init["run"], init.get("epoch", "final"))


def _on_grid(grid: Mapping[str, Any], value: float) -> bool:
    lo, hi, num = grid["min"], grid["max"], grid["num"]
    points = [lo] if num == 1 else [lo + i * (hi - lo) / (num - 1) for i in range(num)]
    return any(abs(p - value) <= 1e-9 for p in points)


def check_pairs(config: Mapping[str, Any]) -> None:
    """Checks every ``pairs`` block: runs, epochs, init, dataset, one model, the lambda grid.

    Raises:
        ConfigError: naming the key, e.g. ``pairs.a7.runs: 'x' is not a key of runs``.
    """
    for name, block in config.get("pairs", {}).items():
        key = f"pairs.{name}"
        runs = block["runs"]
        for run in runs:
            if run not in config["runs"]:
                raise ConfigError(f"{key}.runs: '{run}' is not a key of runs")
        two = [c for c in block.get("compute", PAIR_TWO_RUNS) if c in PAIR_TWO_RUNS]
        if two and len(runs) < 2:
            raise ConfigError(f"{key}.runs: compute {two} compares two runs, got {runs}")
        epoch = block.get("epoch", "final")
        for run in runs:
            if epoch != "final" and epoch not in checkpoint_epochs(config["runs"][run]["train"]):
                raise ConfigError(
                    f"{key}.epoch: run '{run}' has no checkpoint at epoch {epoch} "
                    f"(add it to runs.{run}.train.checkpoints)"
                )
        _check_pair_init(config, key, block)
        _check_pair_models(config, key, block)
        grid = block.get("lambda", {"min": 0.0, "max": 1.0, "num": 11})
        if "interpolation" in block.get("compute", PAIR_TWO_RUNS):
            missing = [v for v in (0.0, 0.5, 1.0) if not _on_grid(grid, v)]
            if missing:
                raise ConfigError(
                    f"{key}.lambda: the grid must include 0, 0.5 and 1 (the two models and the "
                    f"midpoint of the interpolation gap); it misses {missing}"
                )


def _check_pair_init(config: Mapping[str, Any], key: str, block: Mapping[str, Any]) -> None:
    init = block.get("init")
    if init is None:
        return
    if init["run"] not in config["runs"]:
        raise ConfigError(f"{key}.init.run: '{init['run']}' is not a key of runs")
    epoch = init.get("epoch", "final")
    if epoch != "final" and epoch not in checkpoint_epochs(config["runs"][init["run"]]["train"]):
        raise ConfigError(
            f"{key}.init.epoch: run '{init['run']}' has no checkpoint at epoch {epoch} "
            f"(add it to runs.{init['run']}.train.checkpoints)"
        )


def _check_pair_models(config: Mapping[str, Any], key: str, block: Mapping[str, Any]) -> None:
    """Every run of a block (and its init) is one architecture with one number of classes."""
    dataset = block.get("dataset", config["runs"][block["runs"][0]]["dataset"])
    if dataset not in config["datasets"]:
        raise ConfigError(f"{key}.dataset: '{dataset}' is not a key of datasets")
    runs = [*block["runs"], *([block["init"]["run"]] if block.get("init") else [])]
    first = runs[0]
    for run in runs[1:]:
        if _architecture(config, run) != _architecture(config, first):
            raise ConfigError(
                f"{key}.runs: run '{run}' (model '{config['runs'][run]['model']}') has another "
                f"architecture than run '{first}' (model '{config['runs'][first]['model']}')"
            )
    names = {config["runs"][r]["dataset"] for r in runs} | {dataset}
    counts = {dataset_classes(config["datasets"][d]) for d in names}
    if None not in counts and len(counts) > 1:
        raise ConfigError(
            f"{key}.dataset: the runs and dataset '{dataset}' differ in their number of classes "
            f"({sorted(counts)})"
        )


def pair_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A ``pairs`` block resolved: each run's epoch, the init, the SSR epochs, the dataset.

    ``ssr_epochs`` are the checkpoint epochs the first two runs both have, up to the earlier of
    their two epochs. Keys that no part of ``compute`` reads are left out (``lambda`` and
    ``splits`` without ``interpolation``, ``init`` and ``ssr_epochs`` without ``ssr``, the BN and
    batch settings without ``interpolation`` and ``soups``).

    >>> config = {"runs": {"a": {"dataset": "d", "train": {"epochs": 4, "checkpoints": [2]}},
    ...     "b": {"dataset": "d", "train": {"epochs": 4, "checkpoints": [1, 2]}}},
    ...     "pairs": {"p": {"id": "A7", "runs": ["a", "b"], "compute": ["ssr"]}}}
    >>> spec = pair_spec(config, "p")
    >>> spec["epochs"], spec["init"], spec["ssr_epochs"], spec["dataset"]
    ([4, 4], {'run': 'a', 'epoch': 0}, [0, 2, 4], 'd')
    """
    block = config["pairs"][name]
    runs = list(block["runs"])
    epochs = [_pair_epoch(config, run, block.get("epoch", "final")) for run in runs]
    compute = list(block.get("compute", PAIR_TWO_RUNS))
    ssr_epochs: list[int] = []
    if "ssr" in compute:
        common = set(checkpoint_epochs(config["runs"][runs[0]]["train"])) & set(
            checkpoint_epochs(config["runs"][runs[1]]["train"])
        )
        ssr_epochs = sorted(e for e in common if e <= min(epochs[:2]))
    init_run, init_epoch = _pair_init(config, block)
    defaults = {
        "lambda": {"min": 0.0, "max": 1.0, "num": 11},
        "splits": ["test"],
        "bn_mode": "recompute",
        "bn_batches": 4,
        "batch_size": 512,
    }
    spec = {
        **defaults,
        **{k: v for k, v in block.items() if k not in ("epoch", "init")},
        "runs": runs,
        "epochs": epochs,
        "compute": compute,
        "init": {"run": init_run, "epoch": init_epoch},
        "ssr_epochs": ssr_epochs,
        "dataset": block.get("dataset", config["runs"][runs[0]]["dataset"]),
    }
    # keys no part of ``compute`` reads are left out, so that changing them reruns nothing
    unread = {
        "interpolation": ("lambda", "splits"),
        "ssr": ("init", "ssr_epochs"),
    }
    for part, keys in unread.items():
        if part not in compute:
            for key in keys:
                spec.pop(key)
    if not {"interpolation", "soups"} & set(compute):
        for key in ("bn_mode", "bn_batches", "batch_size"):
            spec.pop(key)
    return spec


def pair_checkpoints(config: Mapping[str, Any], name: str) -> dict[str, tuple[str, int]]:
    """``{input name: (run, epoch)}`` of every checkpoint a ``pairs`` block reads.

    ``init`` (with ``ssr``), :func:`pair_input_name` ``(i, e)`` of every run at its epoch and of
    the first two runs at every SSR epoch.
    """
    spec = pair_spec(config, name)
    out: dict[str, tuple[str, int]] = {}
    if "ssr" in spec["compute"]:
        out["init"] = (spec["init"]["run"], spec["init"]["epoch"])
        for i in range(2):
            for epoch in spec["ssr_epochs"]:
                out[pair_input_name(i, epoch)] = (spec["runs"][i], epoch)
    for i, (run, epoch) in enumerate(zip(spec["runs"], spec["epochs"], strict=True)):
        out[pair_input_name(i, epoch)] = (run, epoch)
        if "bn_weights" in spec["compute"]:
            out[pair_input_name(i, 0)] = (run, 0)
    return out


# --------------------------------------------------------------------------- A10 federated

FEDERATED_SELECTION = ("datasets", "model", "alphas", "seeds", "algorithms")


def alpha_label(alpha: float) -> str:
    """The ``{alpha}`` of a federated path: Python's shortest repr of the float.

    >>> alpha_label(10), alpha_label(0.1)
    ('10.0', '0.1')
    """
    return repr(float(alpha))


def federated_alpha(config: Mapping[str, Any], label: str) -> float:
    """The alpha of ``federated.alphas`` whose :func:`alpha_label` is ``label``.

    Raises:
        ConfigError: If none is (naming ``federated.alphas``).
    """
    for alpha in config["federated"]["alphas"]:
        if alpha_label(alpha) == label:
            return float(alpha)
    raise ConfigError(
        f"federated.alphas: no alpha {label!r} (have {config['federated']['alphas']})"
    )


def check_federated(config: Mapping[str, Any]) -> None:
    """Checks the ``federated`` block (A10): its datasets and model exist, alphas are distinct.

    Raises:
        ConfigError: naming the key, e.g. ``federated.model: 'x' is not a key of models``.
    """
    block = config.get("federated", {})
    datasets = block.get("datasets", [])
    if not datasets:
        return
    for name in datasets:
        if name not in config["datasets"]:
            raise ConfigError(
                f"federated.datasets: '{name}' is not a key of datasets "
                f"(known: {sorted(config['datasets'])})"
            )
    model = block.get("model")
    if model is None:
        raise ConfigError("federated.model: required when federated.datasets is not empty")
    if model not in config["models"]:
        raise ConfigError(
            f"federated.model: '{model}' is not a key of models (known: {sorted(config['models'])})"
        )
    labels = [alpha_label(a) for a in block["alphas"]]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"federated.alphas: {block['alphas']} holds one value twice")


def federated_spec(
    config: Mapping[str, Any], dataset: str, alpha: float, algorithm: str, seed: int
) -> dict[str, Any]:
    """What one federated run depends on: the shared settings of the ``federated`` block, the
    dataset and model keys, alpha, the algorithm with its parameters, and the seed.

    >>> cfg = {"federated": {"datasets": ["d"], "model": "m", "alphas": [1.0], "seeds": [0],
    ...     "algorithms": {"fedprox": {"mu": 0.1}}, "rounds": 5}}
    >>> federated_spec(cfg, "d", 1.0, "fedprox", 0)  # doctest: +NORMALIZE_WHITESPACE
    {'rounds': 5, 'dataset': 'd', 'model': 'm', 'alpha': 1.0, 'algorithm': 'fedprox',
     'params': {'mu': 0.1}, 'seed': 0}
    """
    block = config["federated"]
    shared = {k: v for k, v in block.items() if k not in FEDERATED_SELECTION}
    return {
        **shared,
        "dataset": dataset,
        "model": block["model"],
        "alpha": float(alpha),
        "algorithm": algorithm,
        "params": dict(block["algorithms"][algorithm]),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- mode connectivity

MODE_CONNECT_DEFAULTS: dict[str, Any] = {
    "curve": "bezier",
    "epochs": 20,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5.0e-4,
    "batch_size": 128,
    "seed": 0,
    "points": 21,
    "bn_batches": 4,
    "splits": ["train", "test"],
}


def check_mode_connect(config: Mapping[str, Any]) -> None:
    """Checks every ``mode_connect`` block: two runs that exist, of one model and one dataset,
    with a checkpoint at the block's epoch.

    Raises:
        ConfigError: naming the key, e.g. ``mode_connect.c.runs: 'x' is not a key of runs``.
    """
    for name, block in config.get("mode_connect", {}).items():
        key = f"mode_connect.{name}"
        runs = block["runs"]
        for run in runs:
            if run not in config["runs"]:
                raise ConfigError(f"{key}.runs: '{run}' is not a key of runs")
        a, b = (config["runs"][r] for r in runs)
        for field in ("model", "dataset"):
            if a[field] != b[field]:
                raise ConfigError(
                    f"{key}.runs: runs '{runs[0]}' and '{runs[1]}' differ in their {field} "
                    f"('{a[field]}' and '{b[field]}'); a curve joins two runs of one {field}"
                )
        epoch = block.get("epoch", "final")
        for run in runs:
            if epoch != "final" and epoch not in checkpoint_epochs(config["runs"][run]["train"]):
                raise ConfigError(
                    f"{key}.epoch: run '{run}' has no checkpoint at epoch {epoch} "
                    f"(add it to runs.{run}.train.checkpoints)"
                )


def mode_connect_spec(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A ``mode_connect`` block resolved: defaults, each run's checkpoint epoch, the dataset.

    >>> config = {"runs": {"a": {"dataset": "d", "train": {"epochs": 4}},
    ...     "b": {"dataset": "d", "train": {"epochs": 6}}},
    ...     "mode_connect": {"c": {"runs": ["a", "b"], "curve": "polychain"}}}
    >>> spec = mode_connect_spec(config, "c")
    >>> spec["run_epochs"], spec["curve"], spec["dataset"], spec["points"]
    ([4, 6], 'polychain', 'd', 21)
    """
    block = config["mode_connect"][name]
    runs = list(block["runs"])
    epoch = block.get("epoch", "final")
    return {
        **MODE_CONNECT_DEFAULTS,
        **{k: v for k, v in block.items() if k != "epoch"},
        "name": name,
        "runs": runs,
        "run_epochs": [_pair_epoch(config, run, epoch) for run in runs],
        "dataset": config["runs"][runs[0]]["dataset"],
    }


def mode_connect_checkpoints(config: Mapping[str, Any], name: str) -> dict[str, tuple[str, int]]:
    """``{"a": (run, epoch), "b": (run, epoch)}``: the two endpoints of a ``mode_connect`` block."""
    spec = mode_connect_spec(config, name)
    return {k: (r, e) for k, r, e in zip("ab", spec["runs"], spec["run_epochs"], strict=True)}
