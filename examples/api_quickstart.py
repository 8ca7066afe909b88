"""The library API on a torchvision ResNet-18: a curve, a surface and Hessian quantities.

No download and no pretrained weights: random weights on random 3x32x32 images (use your own
model and DataLoader the same way). Runs on CUDA when there is one. ``python
examples/api_quickstart.py [OUT_DIR]`` keeps the files in ``OUT_DIR``; tests/test_api.py runs it.
"""

import copy
import sys

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import landscape

out = sys.argv[1] if len(sys.argv) > 1 else None  # where to keep the files (None: in memory)
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10).to(device)
inputs, targets = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
data = DataLoader(TensorDataset(inputs, targets), batch_size=4)  # any (inputs, targets) batches

# 1D curve along a filter-normalized Gaussian direction (seed 0, biases and BN not perturbed),
# BN statistics re-estimated at every point over the first batch (the papers' UpBN).
curve = landscape.curve(
    model, F.cross_entropy, data, lambdas=5, bn_batches=1, out=out and f"{out}/curve.h5"
)
print(curve.frame(["train/loss", "train/error"]))  # a table by lambda
print(curve["analysis/train/loss/type"])  # the curve taxonomy: v-basin, v-side, ...


# 2D surface on a 3 x 3 grid over [-1, 1]^2, BN running statistics kept; any loss works.
def smoothed(outputs, targets):
    return F.cross_entropy(outputs, targets, label_smoothing=0.1)


surface = landscape.surface(
    model, smoothed, (inputs, targets), grid=3, bn_mode="keep", out=out and f"{out}/surface.h5"
)
print(surface.to_xarray()["train_loss"])  # dims (x, y), with coordinates

# Hessian quantities of the trainable parameters: here the classifier only (5130 of them), so
# that the Lanczos basis fits a laptop (on a GPU, drop the freezing to take all 11.2M). With the
# data in one batch the gradient's graph is built once and each product is one backward pass.
head = copy.deepcopy(model).requires_grad_(False)
head.fc.requires_grad_(True)
top = landscape.hessian.top_eigenvalues(head, F.cross_entropy, (inputs, targets), k=3)
print("top eigenvalues", top["LA/eigenvalues"], "residuals", top["LA/residuals"])
trace = landscape.hessian.trace(head, F.cross_entropy, (inputs, targets))
print("trace", trace.attrs["trace"], "+-", trace.attrs["stderr"], trace.attrs["estimator"])
density = landscape.hessian.density(head, F.cross_entropy, (inputs, targets), steps=20, runs=1)
print("spectrum within", density.attrs["ritz_min"], density.attrs["ritz_max"])
