"""landscape.sgd.SGD against torch.optim.SGD: updates, schedules, checkpoints, start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.sgd import SGD


class Net(nn.Module):
    """A conv net with BN and a parameter that never gets a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(64, 3)
        self.unused = nn.Parameter(torch.randn(5))

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def pair(seed: int = 0) -> tuple[Net, Net]:
    torch.manual_seed(seed)
    a = Net()
    b = Net()
    b.load_state_dict(a.state_dict())
    return a, b


def batches(steps: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g))
        for _ in range(steps)
    ]


def train(model: nn.Module, optimizer, data, lrs=None) -> None:
    for step, (x, y) in enumerate(data):
        if lrs is not None:
            for group in optimizer.param_groups:
                group["lr"] = lrs[step]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def assert_bitwise(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


HYPER = [
    dict(momentum=0.9, weight_decay=5e-4, nesterov=False),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=True),
    dict(momentum=0.9, weight_decay=0.0, nesterov=True),
    dict(momentum=0.0, weight_decay=5e-4, nesterov=False),
    dict(momentum=0.0, weight_decay=0.0, nesterov=False),
]


@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("foreach", [False, True])
def test_updates_are_bitwise_torch_optim_sgd(hyper, foreach):
    ours, theirs = pair()
    data = batches(6)
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01, 0.2]  # a schedule set through param_groups
    train(ours, SGD(ours.parameters(), lr=0.1, **hyper), data, lrs)
    train(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, foreach=foreach, **hyper), data, lrs)
    assert_bitwise(ours, theirs)
    assert not torch.equal(ours.conv.weight, pair()[0].conv.weight)  # it did train


def test_parameters_without_gradient_are_left_alone_and_get_no_buffer():
    ours, theirs = pair()
    unused = ours.unused.detach().clone()
    opt = SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    train(ours, opt, batches(2))
    train(theirs, reference, batches(2))
    assert torch.equal(ours.unused, unused)
    assert opt.state_dict()["state"].keys() == reference.state_dict()["state"].keys()
    assert len(opt.state_dict()["state"]) == len(list(ours.parameters())) - 1


def test_state_dict_is_torch_optim_sgd_s():
    ours, theirs = pair()
    opt = SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    reference = torch.optim.SGD(
        theirs.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    assert opt.state_dict() == reference.state_dict()  # fresh: no tensors yet
    train(ours, opt, batches(3))
    train(theirs, reference, batches(3))
    a, b = opt.state_dict(), reference.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert torch.equal(a["state"][i]["momentum_buffer"], b["state"][i]["momentum_buffer"])


@pytest.mark.parametrize("direction", ["ours to torch", "torch to ours"])
def test_a_saved_state_resumes_bitwise_in_the_other_optimizer(direction):
    first, second = pair()
    data = batches(5)
    hyper = dict(momentum=0.9, weight_decay=5e-4)
    make = {
        "ours": lambda m, lr: SGD(m.parameters(), lr=lr, **hyper),
        "torch": lambda m, lr: torch.optim.SGD(m.parameters(), lr=lr, **hyper),
    }
    saver, loader = direction.split(" to ")
    # straight through with the loader's optimizer
    train(second, make[loader](second, 0.1), data)
    # three steps with the saver's, state saved, resumed with a fresh loader's (another lr)
    opt = make[saver](first, 0.1)
    train(first, opt, data[:3])
    resumed = make[loader](first, 0.7)
    resumed.load_state_dict(opt.state_dict())
    assert resumed.param_groups[0]["lr"] == 0.1  # the saved hyperparameters, as torch.optim
    train(first, resumed, data[3:])
    assert_bitwise(first, second)


def test_loaded_buffers_are_copies_on_the_parameters_dtype():
    model = Net()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, opt, batches(1))
    state = opt.state_dict()
    double = Net().double()
    other = SGD(double.parameters(), lr=0.1, momentum=0.9)
    other.load_state_dict(state)
    assert other.buffers[0] is None  # `unused`, registered first, never had a gradient
    saved = state["state"][1]["momentum_buffer"]
    buf = other.buffers[1]
    assert buf.dtype == torch.float64 and torch.equal(buf, saved.double())
    buf.add_(1.0)
    assert not torch.equal(buf, saved.double())


def test_bad_arguments_and_states_are_named():
    params = list(Net().parameters())
    with pytest.raises(ValueError, match="Nesterov momentum requires momentum"):
        SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="must be >= 0"):
        SGD(params, lr=-0.1)
    opt = SGD(params, lr=0.1, momentum=0.9)
    other = torch.optim.SGD(params[:2], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"groups of \[2\] parameters for one group of 7"):
        opt.load_state_dict(other.state_dict())
    damped = torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.1)
    with pytest.raises(ValueError, match="dampening"):
        opt.load_state_dict(damped.state_dict())


def test_zero_grad_without_set_to_none_zeroes_in_place():
    model = Net()
    opt = SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(torch.randn(2, 1, 4, 4)), torch.tensor([0, 1])).backward()
    grad = model.conv.weight.grad
    opt.zero_grad(set_to_none=False)
    assert model.conv.weight.grad is grad and not grad.any()
    opt.zero_grad()
    assert model.conv.weight.grad is None


def test_a_resumed_chain_writes_torch_optim_s_checkpoint_bytes(tmp_path, monkeypatch):
    """Values, state layout and even pickle's sharing of key strings: 0 -> 1 -> 3 with either."""
    from landscape import train

    spec = {
        "run": "r",
        "dataset_name": "d",
        "dataset": {"source": "digits"},
        "model_name": "m",
        "model": {"arch": "vgg", "layers": [4, "M", 8]},
        "train": {"epochs": 3, "batch_size": 256, "nesterov": True},
    }

    def chain(folder):
        folder.mkdir()
        monkeypatch.chdir(folder)  # relative paths, as the workflow records them
        previous = None
        for epoch in (0, 1, 3):
            train.train_model(f"{epoch}.pt", spec, epoch, previous=previous, device="cpu")
            previous = f"{epoch}.pt"
        return Path("3.pt").read_bytes()

    ours = chain(tmp_path / "ours")
    monkeypatch.setattr(
        train,
        "make_optimizer",
        lambda model, cfg: torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        ),
    )
    assert ours == chain(tmp_path / "torch")
