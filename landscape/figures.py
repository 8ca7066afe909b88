"""The ``figures`` config block: which curves and surfaces make each multi-panel paper figure.

A figure (``figures.<name>``) is drawn once per run and epoch it selects. Each panel is either a
list of curve lines or one surface. A line names a curve block and, optionally, another epoch of
the same run (V15: one Gaussian at several checkpoints) or another run (V3: the ResNet with and
without skips in one panel; its final epoch unless the line names one), a legend label and a
factor on lambda (V6 draws the Gaussian's lambda / 10). Every line and surface must be one that
its own block computes, so a figure adds plots but no evaluation of its own: the curve taxonomy
and the claims see every curve a figure shows.

This module only reads the config (no torch, no matplotlib): the workflow calls it while the DAG
is built. :mod:`landscape.panels` draws the figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from landscape.config import ConfigError, block_epochs, block_runs, final_epoch


def _line(entry: str | Mapping[str, Any]) -> dict[str, Any]:
    """A panel line as a mapping with every key."""
    line = {"curve": entry} if isinstance(entry, str) else dict(entry)
    line.setdefault("run", None)
    line.setdefault("epoch", None)
    line.setdefault("label", None)
    line.setdefault("x_scale", 1.0)
    return line


def _line_epoch(config: Mapping[str, Any], line: Mapping[str, Any], run: str, epoch: int) -> int:
    if line["epoch"] is None:
        return epoch if line["run"] == run else final_epoch(config, line["run"])
    return final_epoch(config, line["run"]) if line["epoch"] == "final" else int(line["epoch"])


def figure_panels(
    config: Mapping[str, Any], name: str, run: str, epoch: int
) -> list[dict[str, Any]]:
    """The panels of figure ``name`` at one run and epoch, every line resolved.

    Returns:
        One dict per panel, in config order: ``{"title", "surface": {"surface", "epoch"}}`` or
        ``{"title", "lines": [{"curve", "run", "epoch", "label", "x_scale"}, ...]}`` with the
        run and epoch of each line filled in and the label defaulting to the curve's name (with
        its run and epoch where they differ from the figure's).

    >>> cfg = {"runs": {"r": {"train": {"epochs": 30}}}, "figures": {"f": {"panels": {
    ...     "a": ["g", {"curve": "g", "epoch": 0}], "b": {"surface": "s"}}}}}
    >>> [line["label"] for line in figure_panels(cfg, "f", "r", 30)[0]["lines"]]
    ['g', 'g (epoch 0)']
    """
    panels = []
    for title, entry in config["figures"][name]["panels"].items():
        if isinstance(entry, Mapping):
            surface = {"surface": entry["surface"], "run": run, "epoch": epoch}
            panels.append({"title": title, "surface": surface})
            continue
        lines = []
        for raw in entry:
            line = _line(raw)
            line["run"] = line["run"] or run
            line["epoch"] = _line_epoch(config, line, run, epoch)
            if line["label"] is None:
                where = [line["run"]] if line["run"] != run else []
                where += [f"epoch {line['epoch']}"] if line["epoch"] != epoch else []
                line["label"] = line["curve"] + (f" ({', '.join(where)})" if where else "")
            lines.append(line)
        panels.append({"title": title, "lines": lines})
    return panels


def figure_members(panels: list[Mapping[str, Any]]) -> list[tuple[str, str, str, int]]:
    """``(family, block, run, epoch)`` of every curve and surface the panels draw, in order."""
    members = []
    for panel in panels:
        if "surface" in panel:
            surface = panel["surface"]
            members.append(("surfaces", surface["surface"], surface["run"], surface["epoch"]))
        else:
            members.extend(
                ("curves", line["curve"], line["run"], line["epoch"]) for line in panel["lines"]
            )
    return members


def figure_instances(config: Mapping[str, Any], name: str) -> list[tuple[str, int]]:
    """The ``(run, epoch)`` pairs figure ``name`` is drawn at."""
    block = config["figures"][name]
    runs = block_runs(config, block)
    return [(run, epoch) for run in runs for epoch in block_epochs(config, block, run)]


def check_figures(config: Mapping[str, Any]) -> None:
    """Every figure draws only curves and surfaces that their blocks compute.

    Raises:
        ConfigError: naming the figure's key, e.g. ``figures.v2.panels.Norm``, for a name that is
            not a curve or surface block, or a run or epoch that the block does not select.
    """
    for name, block in config.get("figures", {}).items():
        for run in block_runs(config, block):
            if run not in config["runs"]:
                raise ConfigError(f"figures.{name}.runs: '{run}' is not a key of runs")
        for run, epoch in figure_instances(config, name):
            for title, entry in block["panels"].items():
                for raw in entry if isinstance(entry, list) else []:
                    other = _line(raw)["run"]
                    if other is not None and other not in config["runs"]:
                        raise ConfigError(
                            f"figures.{name}.panels.{title}: run '{other}' is not a key of runs"
                        )
            panels = figure_panels(config, name, run, epoch)
            for panel, (family, member, at_run, at) in _members_by_panel(panels):
                _check_member(config, f"figures.{name}.panels.{panel}", family, member, at_run, at)


def _check_member(config, key: str, family: str, member: str, run: str, epoch: int) -> None:
    if member not in config.get(family, {}):
        raise ConfigError(f"{key}: '{member}' is not a key of {family}")
    selected = config[family][member]
    if run not in block_runs(config, selected):
        raise ConfigError(
            f"{key}: {family}.{member} is not evaluated on run '{run}' "
            f"(add it to {family}.{member}.runs)"
        )
    if epoch not in block_epochs(config, selected, run):
        raise ConfigError(
            f"{key}: {family}.{member} is not evaluated at epoch {epoch} of run "
            f"'{run}' (add it to {family}.{member}.epochs)"
        )


def _members_by_panel(panels: list[Mapping[str, Any]]):
    for panel in panels:
        for member in figure_members([panel]):
            yield panel["title"], member
