"""Start-up of the workflow's jobs: the scripts that only read artifacts and write tables, figures
or merged files must not import torch (about 2 s a job on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_FREE_SCRIPTS = (
    "export_history",
    "export_surface",
    "merge_eigenmap",
    "merge_surface",
    "plot_angles",
    "plot_cosines",
    "plot_curve",
    "plot_curve_table",
    "plot_density",
    "plot_eigenmap",
    "plot_federated_accuracy",
    "plot_federated_table",
    "plot_figure",
    "plot_loss_change",
    "plot_mode_connect",
    "plot_pair",
    "plot_soa",
    "plot_surface",
    "plot_sweep",
    "plot_theory",
    "plot_trajectory",
    "plot_weight_stats",
    "surface_page",
    "write_catalog",
    "write_claims",
    "write_curve_table",
    "write_federated_table",
    "write_group_curvature_table",
    "write_sweep_table",
)
# Runs the imports of every script given (a script's body is under `if __name__ == "__main__"`)
# with torch refused, and prints {script: the file that asked for torch} as JSON. Refusing torch
# instead of importing it lets one interpreter check every script: torch cannot be unloaded.
PROBE = r"""
import json, runpy, sys, traceback

class RefuseTorch:
    asked = []

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] != "torch":
            return None
        files = [frame.filename for frame in traceback.extract_stack()]
        ours = [f for f in files if "/landscape/" in f or "/scripts/" in f]
        self.asked.append((ours or files)[-1])
        raise ImportError("torch is refused in this check", name=name)

refuse = RefuseTorch()
sys.meta_path.insert(0, refuse)
asked = {}
for script in sys.argv[1:]:
    refuse.asked.clear()
    try:
        runpy.run_path(script, run_name="startup_check")
    except ImportError:
        if not refuse.asked:
            raise
    if refuse.asked:
        asked[script] = refuse.asked[0]
print(json.dumps(asked))
"""


def test_post_processing_scripts_do_not_import_torch():
    """The imports of every listed script, in a fresh interpreter: none asks for torch."""
    scripts = [str(ROOT / "scripts" / f"{name}.py") for name in TORCH_FREE_SCRIPTS]
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *scripts], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    asked = {Path(s).stem: f.removeprefix(f"{ROOT}/") for s, f in json.loads(run.stdout).items()}
    assert asked == {}, f"scripts that import torch (script: the module that asks for it): {asked}"
