"""Start-up of the workflow's jobs: the scripts that only read artifacts and write tables, figures
or merged files must not import torch (about 2 s a job on 2 cores), and the jobs that train or
take gradients must not import ``torch._dynamo`` (1.2-1.5 s more: torch.optim's constructor and
``torch.func.grad`` import it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


# Each snippet does in a fresh interpreter what a job of its kind does, at a toy size.
DYNAMO_FREE = {
    "training": (
        "from landscape.train import train_model\n"
        "spec = {'run': 'r', 'dataset_name': 'd', 'dataset': {'source': 'digits'},\n"
        "        'model_name': 'm', 'model': {'arch': 'vgg', 'layers': [4, 'M', 8]},\n"
        "        'train': {'epochs': 2, 'batch_size': 256, 'nesterov': True}}\n"
        "train_model(f'{tmp}/e0.pt', spec, 0, device='cpu')\n"
        "train_model(f'{tmp}/e2.pt', spec, 2, previous=f'{tmp}/e0.pt', device='cpu')\n"
    ),
    "federated": (
        "from tests.test_federated import builder, small_config, toy_data, VGG\n"
        "from landscape.federated.runner import simulate\n"
        "data = toy_data()\n"
        "for algorithm in ('fedavg', 'fedprox', 'moon', 'feddyn', 'fedpan', 'fedsign'):\n"
        "    simulate(small_config(algorithm=algorithm), data, builder(data, VGG))\n"
    ),
    "hessian and mining": (
        "import torch\n"
        "from landscape.hessian import HessianLinearOperator, lanczos, soa_loss_change\n"
        "from landscape.mining import mine_wpeak\n"
        "from landscape.models import build_model\n"
        "model = build_model({'arch': 'vgg', 'layers': [4, 'M', 8], 'bn': True}, 3, (1, 4, 4))\n"
        "x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])\n"
        "op = HessianLinearOperator(model.eval(), [(x, y)])\n"
        "op.gradient(), lanczos(op, 2), soa_loss_change(op, [0.5], num_samples=2)\n"
        "mine_wpeak(model, [(x, y)], epochs=1)\n"
    ),
}


@pytest.mark.parametrize("kind", list(DYNAMO_FREE))
def test_training_and_gradient_jobs_do_not_import_torch_dynamo(kind, tmp_path):
    code = f"tmp = {str(tmp_path)!r}\n{DYNAMO_FREE[kind]}"
    code += "import sys\nassert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
