"""Fast evaluation of many perturbed models ``theta + sum_i c_i eps_i`` over a grid.

Two strategies share one private working copy of the model (the caller's model is never
modified) and data that stays on its device:

- ``batched``: grid points are evaluated in chunks of ``C``; the chunk's parameters are stacked
  along a leading axis and ``torch.func.vmap`` runs ``functional_call`` over them, so one pass
  evaluates ``C`` models on the same data batch. This pays for models made of matrix products
  (MLPs); the chunk size comes from a memory budget and the activation size per sample.
- ``pointwise``: one point at a time, parameters written in place into the working copy, an
  optionally ``torch.compile``-d forward. Batching grid points through convolutions turns them
  into grouped convolutions, which are slower than this loop on a CPU.

``auto`` picks ``batched`` for models without convolutions and ``pointwise`` otherwise.

Options, all off by default (config ``evaluation``): ``precision`` (``tf32``, ``bf16``
autocast), ``channels_last``, ``compile`` and, for ``pointwise``, ``bn_recompute: functional``
(BN statistics through one compilable graph per batch and the eval pass with BN folded into the
convolutions, :mod:`landscape.bn_recompute`; equal to the eager recompute up to rounding).

Structure the generic loop ignores, used by both:

- The first layer is linear in its weights: ``f(x; W + sum_i c_i D_i) = f(x; W) + sum_i c_i
  f(x; D_i)`` (biases included, as ``f(x; W, b)`` is linear in ``(W, b)`` jointly). Its input does
  not depend on the grid point, so its k + 1 responses are computed once per data batch (and
  cached across points when they fit in the budget) and combined per point. Exact up to rounding.
  The cache is keyed by the batch's place in the evaluation (split and index, or BN batch index)
  and a response is reused only for an input equal to the one it was computed from, so batches
  built anew on every pass (a ``DatasetSplit``) never get another batch's response.
- BN statistics for ``recompute`` ("UpBN") are a cumulative average over ``B`` fixed batches.
  Under vmap this is an exponential average with momentum ``1 / (b + 1)`` at batch ``b``, which
  needs no data-dependent Python control flow.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from tqdm import tqdm

from landscape import bn_recompute as bnr
from landscape.data import Split
from landscape.precision import float32_precision

_BN = nn.modules.batchnorm._BatchNorm
_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
STRATEGIES = ("auto", "batched", "pointwise")
PRECISIONS = ("fp32", "tf32", "bf16")
BN_RECOMPUTES = ("eager", "functional")


class _FirstLayer(nn.Module):
    """Stands in for the first layer: its responses to theta and each direction, combined.

    ``coef`` (shape ``(k,)``) is the only parameter; vmap batches it like any other. Responses
    are cached while ``cache_bytes`` allows, under ``key`` (the batch's place in the evaluation,
    set by the evaluator before each forward pass; None: no caching), together with the input
    they came from: a cached response serves only an equal input.
    """

    def __init__(self, module: nn.Module, base: dict, dirs: dict, k: int, cache_bytes: float):
        super().__init__()
        self.module = module
        self.vectors = [base] + [{n: t[i] for n, t in dirs.items()} for i in range(k)]
        self.coef = nn.Parameter(torch.zeros(k, device=next(iter(base.values())).device))
        self.coef.requires_grad_(False)
        self.key: tuple | None = None
        self.cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.budget = self.cache_bytes = cache_bytes

    def clear(self) -> None:
        """Forgets every cached response (the batches of a new evaluation may differ)."""
        self.cache.clear()
        self.cache_bytes = self.budget

    def responses(self, x: Tensor) -> Tensor:
        hit = self.cache.get(self.key) if self.key is not None else None
        if hit is not None and _same(hit[0], x):
            return hit[1]
        r = torch.stack([functional_call(self.module, v, (x,)) for v in self.vectors])
        size = r.numel() * r.element_size() + x.numel() * x.element_size()
        if self.key is not None and hit is None and size <= self.cache_bytes:
            self.cache[self.key] = (x, r)
            self.cache_bytes -= size
        return r

    def forward(self, x: Tensor) -> Tensor:
        r = self.responses(x)
        return r[0] + torch.tensordot(self.coef, r[1:], dims=1)


def _same(a: Tensor, b: Tensor) -> bool:
    """Same shape, dtype, device and values."""
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def _first_layer(model: nn.Module, x: Tensor) -> str | None:
    """Dotted name of the first module with state if it is a Linear or Conv, else None."""
    found: list[tuple[str, nn.Module]] = []
    hooks = []
    for name, module in model.named_modules():
        if not [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            continue

        def hook(mod, args, name=name):
            if not found:
                found.append((name, mod))

        hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if found and isinstance(found[0][1], _LINEAR):
        return found[0][0]
    return None


def _activation_floats(model: nn.Module, x: Tensor) -> int:
    """Floats of every module output for one sample: a proxy of per-sample working memory."""
    total = 0

    def hook(mod, args, out):
        nonlocal total
        if isinstance(out, Tensor) and out.dim() > 0:
            total += out[0].numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return total


class GridEvaluator:
    """Loss and error of ``theta + coords[p] @ directions`` for every grid point ``p``.

    Args:
        model: the base model theta (left untouched).
        directions: k directions ``{name: tensor}`` over trainable parameters (missing = 0).
        bn_mode: ``keep`` (running statistics of theta, "No UpBN") or ``recompute``
            (re-estimated per point over ``bn_batches`` as a cumulative average, "UpBN").
        bn_batches: fixed training batches for ``recompute``.
        batch_size: data batch size of the evaluation.
        strategy: ``auto``, ``batched`` or ``pointwise`` (see the module docstring).
        chunk_size: points per vmapped pass (``batched``); None derives it from ``memory_mb``.
        memory_mb: working-memory budget for chunks and the first-layer cache.
        first_layer: use the first layer's linearity; None (default) for the batched strategy
            only, where it pays; False for a plain reference.
        compile: ``torch.compile`` the forward of the ``pointwise`` strategy (and, with
            ``bn_recompute: functional``, its BN statistics pass).
        precision: ``fp32`` (default), ``tf32`` (TF32 matmuls and convolutions on CUDA; no effect
            on a CPU) or ``bf16`` (``torch.autocast`` to bfloat16; losses summed in float64).
        channels_last: convolutional models and their inputs in channels-last memory format
            (``pointwise`` strategy).
        bn_recompute: ``eager`` (default: the fixed batches one by one in train mode with
            momentum ``1 / (b + 1)``) or ``functional`` (``pointwise`` strategy: all batches in
            one pass of :func:`landscape.bn_recompute.stats_model`, and the eval pass with BN
            folded into the preceding convolutions, :func:`landscape.bn_recompute.folded_model`;
            equal up to rounding).
        buffer_directions: k directions over buffers (BN ``running_mean``/``running_var``,
            :mod:`landscape.directions.states`; missing = 0), or None: every point's buffers are
            then ``theta's + coords[p] @ buffer_directions`` instead of theta's (``keep``; under
            ``recompute`` the statistics are re-estimated and the perturbation is overwritten).

    Raises:
        ValueError: for an unknown BN mode, strategy, precision or BN recompute, ``recompute``
            without batches, ``functional`` with the first-layer stand-in, or buffer directions of
            the wrong count or naming no floating buffer of the model.
    """

    def __init__(
        self,
        model: nn.Module,
        directions: Sequence[Mapping[str, Tensor]],
        *,
        bn_mode: str = "recompute",
        bn_batches: Sequence[tuple[Tensor, Tensor]] = (),
        batch_size: int = 512,
        strategy: str = "auto",
        chunk_size: int | None = None,
        memory_mb: float = 1024.0,
        first_layer: bool | None = None,
        compile: bool = False,
        buffer_directions: Sequence[Mapping[str, Tensor]] | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        bn_recompute: str = "eager",
    ):
        if bn_mode not in ("keep", "recompute"):
            raise ValueError(f"bn_mode: unknown {bn_mode!r}; one of ('keep', 'recompute')")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown {strategy!r}; one of {STRATEGIES}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision: unknown {precision!r}; one of {PRECISIONS}")
        if bn_recompute not in BN_RECOMPUTES:
            raise ValueError(f"bn_recompute: unknown {bn_recompute!r}; one of {BN_RECOMPUTES}")
        if bn_recompute == "functional" and first_layer:
            raise ValueError("bn_recompute 'functional' does not combine with first_layer")
        self.work = copy.deepcopy(model).eval()
        for p in self.work.parameters():
            p.requires_grad_(False)
        self.bn = [m for m in self.work.modules() if isinstance(m, _BN)]
        if bn_mode == "recompute" and self.bn and not bn_batches:
            raise ValueError("bn_mode 'recompute' needs at least one batch in bn_batches")
        self.bn_mode = bn_mode if self.bn else "keep"
        self.bn_batches = list(bn_batches)
        self.batch_size = batch_size
        self.k = len(directions)
        has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in self.work.modules())
        self.strategy = ("pointwise" if has_conv else "batched") if strategy == "auto" else strategy
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        self.base = {n: p.detach().clone() for n, p in self.work.named_parameters()}
        self.dirs = {
            n: torch.stack(
                [
                    d[n].to(self.base[n]) if n in d else torch.zeros_like(self.base[n])
                    for d in directions
                ]
            )
            for n in trainable
        }
        self.buffers = {n: b.detach().clone() for n, b in self.work.named_buffers()}
        self.buffer_dirs = self._buffer_dirs(buffer_directions)
        self.chunk_size = chunk_size
        self.memory_mb = memory_mb
        # Measured (benchmarks/grid_eval.py): the cache pays for batched MLPs, not for conv nets.
        self.use_first_layer = self.strategy == "batched" if first_layer is None else first_layer
        self.compile = compile
        self.precision = precision
        self.channels_last = channels_last
        self.functional = bn_recompute == "functional" and self.strategy == "pointwise"
        if self.functional:
            self.use_first_layer = False
        self.stats_forward = None
        self.bn_inputs: list[Tensor] = []
        self.folded = 0
        self.first: str | None = None
        self.stand_in: _FirstLayer | None = None
        self._forward_eval = None
        self._prepared = False

    # ------------------------------------------------------------------ set-up

    def _buffer_dirs(self, directions: Sequence[Mapping[str, Tensor]] | None) -> dict:
        """Stacked ``(k, ...)`` buffer directions over the buffers any of them names."""
        if directions is None or not any(directions):
            return {}
        if len(directions) != self.k:
            raise ValueError(f"buffer_directions: {len(directions)} for {self.k} directions")
        names = [n for n in self.buffers if any(n in d for d in directions)]
        unknown = sorted({n for d in directions for n in d} - set(names))
        if unknown or any(not self.buffers[n].is_floating_point() for n in names):
            raise ValueError(f"buffer_directions: {unknown or names} not floating buffers")
        return {
            n: torch.stack(
                [
                    d[n].to(self.buffers[n]) if n in d else torch.zeros_like(self.buffers[n])
                    for d in directions
                ]
            )
            for n in names
        }

    def _point_buffers(self, coords: Tensor) -> dict[str, Tensor]:
        """Stacked buffers of a chunk: theta's, plus ``coords @ buffer_dirs`` where perturbed."""
        out = {
            n: b.unsqueeze(0).expand(len(coords), *b.shape).clone() for n, b in self.buffers.items()
        }
        for n, d in self.buffer_dirs.items():
            out[n] = self.buffers[n].unsqueeze(0) + torch.tensordot(coords.to(d), d, dims=1)
        return out

    def _prepare(self, probe: Tensor) -> None:
        floats = _activation_floats(self.work, probe)
        budget = self.memory_mb * 2**20
        if self.use_first_layer:
            self.first = _first_layer(self.work, probe)
        if self.first is not None:
            self._install_first_layer(cache_bytes=budget / 2)
        if self.strategy == "batched":
            params = sum(t[0].numel() for t in self.dirs.values())
            # activations of one point on one batch plus its parameters; x3 for temporaries
            per_point = 4 * 3 * (floats * self.batch_size + params)
            self.chunk_size = self.chunk_size or max(1, int(budget / 2 // per_point))
        else:
            self.chunk_size = 1
            if self.channels_last:
                self.work.to(memory_format=torch.channels_last)
            self.params = dict(self.work.named_parameters())
            self.buffer_refs = dict(self.work.named_buffers())
            forward = self.work
            if self.functional:
                self._prepare_functional()
                forward, self.folded = bnr.folded_model(self.work)
            self._forward_eval = torch.compile(forward) if self.compile else forward
        self._prepared = True

    def _prepare_functional(self) -> None:
        """The BN statistics model (:func:`landscape.bn_recompute.stats_model`) where it applies
        (running statistics tracked); else the eager loop stays."""
        if self.bn_mode != "recompute" or not bnr.supported(self.work):
            return
        self.bn_inputs = [self._input(x) for x, _ in self.bn_batches]
        stats = bnr.stats_model(self.work, len(self.bn_batches))
        self.stats_forward = torch.compile(stats) if self.compile else stats

    def _input(self, x: Tensor) -> Tensor:
        """``x`` in the model's memory format."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def _precision(self, device: torch.device) -> Iterator[None]:
        """The evaluation's numeric precision: autocast for bf16, the CUDA float32 switches else.

        ``fp32`` sets matmuls and cuDNN convolutions to IEEE float32 explicitly: PyTorch's own
        default runs CUDA convolutions in TF32 (``torch.backends.cudnn.conv.fp32_precision`` is
        ``"tf32"``), which would make the fp32 reference a TF32 one.
        """
        if self.precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
            return
        with float32_precision("tf32" if self.precision == "tf32" else "ieee"):
            yield

    def _install_first_layer(self, cache_bytes: float) -> None:
        prefix = self.first + "."
        mine = [n for n in self.base if n.startswith(prefix)]
        base = {n[len(prefix) :]: self.base.pop(n) for n in mine}
        dirs = {n[len(prefix) :]: self.dirs.pop(n) for n in mine if n in self.dirs}
        module = copy.deepcopy(self.work.get_submodule(self.first))
        stand_in = self.stand_in = _FirstLayer(module, base, dirs, self.k, cache_bytes)
        self.work.set_submodule(self.first, stand_in)
        self.base[prefix + "coef"] = stand_in.coef.detach().clone()
        self.dirs[prefix + "coef"] = torch.eye(self.k, device=stand_in.coef.device)

    # ------------------------------------------------------------------ evaluation

    def __call__(
        self, coords: np.ndarray, splits: Mapping[str, Split], progress: bool = False
    ) -> dict[str, dict[str, np.ndarray]]:
        """Evaluates every point; returns ``{split: {"loss": (P,), "error": (P,)}}`` (float64).

        Raises:
            ValueError: if ``coords`` is not of shape ``(P, k)``.
        """
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != self.k:
            raise ValueError(f"coords: shape {coords.shape} does not match {self.k} directions")
        out = {s: {"loss": np.empty(len(coords)), "error": np.empty(len(coords))} for s in splits}
        if not splits or not len(coords):
            return out
        device = next(iter(self.base.values())).device
        with torch.no_grad(), self._precision(device):
            if not self._prepared:
                self._prepare(next(iter(next(iter(splits.values())).batches(1)))[0])
            if self.stand_in is not None:
                self.stand_in.clear()
            step = self.chunk_size
            for start in tqdm(range(0, len(coords), step), disable=not progress, desc="grid"):
                chunk = torch.as_tensor(coords[start : start + step])
                evaluate = self._batched if self.strategy == "batched" else self._pointwise
                for s, (loss, error) in evaluate(chunk, splits).items():
                    out[s]["loss"][start : start + len(chunk)] = loss
                    out[s]["error"][start : start + len(chunk)] = error
        return out

    def _at(self, key: tuple) -> GridEvaluator:
        """Names the batch of the next forward pass for the first-layer cache."""
        if self.stand_in is not None:
            self.stand_in.key = key
        return self

    def _point_params(self, coords: Tensor) -> dict[str, Tensor]:
        """Stacked parameters of a chunk: ``base + coords @ dirs`` per parameter."""
        return {
            n: self.base[n].unsqueeze(0) + torch.tensordot(coords.to(d), d, dims=1)
            for n, d in self.dirs.items()
        }

    # batched strategy -------------------------------------------------------

    def _vmapped(self, params: dict, buffers: dict, x: Tensor) -> Tensor:
        return vmap(lambda p, b: functional_call(self.work, (p, b), (x,)), randomness="error")(
            params, buffers
        )

    def _batched(self, chunk: Tensor, splits: Mapping[str, Split]) -> dict:
        params = self._point_params(chunk)
        buffers = self._point_buffers(chunk)
        if self.bn_mode == "recompute":
            try:
                for b, (x, _) in enumerate(self.bn_batches):
                    for m in self.bn:  # only BN trains: dropout stays off, vmap deterministic
                        m.train()
                        m.momentum = 1.0 / (b + 1)
                    self._at(("bn", b))._vmapped(params, buffers, x)
            finally:
                self.work.eval()
        return {
            s: _metrics(
                lambda x, i, s=s: self._at((s, i))._vmapped(params, buffers, x),
                split,
                self.batch_size,
            )
            for s, split in splits.items()
        }

    # pointwise strategy -----------------------------------------------------

    def _pointwise(self, chunk: Tensor, splits: Mapping[str, Split]) -> dict:
        point = {n: t[0] for n, t in self._point_params(chunk).items()}
        for n, t in point.items():
            self.params[n].copy_(t)
        point_buffers = self._point_buffers(chunk) if self.buffer_dirs else None
        for n, b in self.buffer_refs.items():
            b.copy_(self.buffers[n] if point_buffers is None else point_buffers[n][0])
        if self.bn_mode == "recompute" and self.stats_forward is not None:
            bnr.reset(self.work)
            for x in self.bn_inputs:
                self.stats_forward(x)
        elif self.bn_mode == "recompute":
            try:
                for b, (x, _) in enumerate(self.bn_batches):
                    for m in self.bn:  # cumulative average as in the batched strategy
                        m.train()
                        m.momentum = 1.0 / (b + 1)
                    # eager: a compiled graph is rebuilt per momentum
                    self._at(("bn", b)).work(self._input(x))
            finally:
                self.work.eval()
        return {
            s: _metrics(
                lambda x, i, s=s: self._at((s, i))._forward_eval(self._input(x)).unsqueeze(0),
                split,
                self.batch_size,
            )
            for s, split in splits.items()
        }


def _metrics(forward, split: Split, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-point mean cross-entropy and error over a split; ``forward(x, batch_index)`` returns
    (C, B, classes)."""
    loss_sum = wrong = 0
    for i, (x, y) in enumerate(split.batches(batch_size)):
        logits = forward(x, i)
        if logits.dtype in (torch.bfloat16, torch.float16):  # autocast: reduce in float32
            logits = logits.float()
        c, b = logits.shape[:2]
        # cross-entropy as logsumexp - logit of the label: one fused pass, no (C*B) reshape
        target = logits.gather(-1, y.expand(c, b).unsqueeze(-1)).squeeze(-1)
        losses = torch.logsumexp(logits, dim=-1) - target
        loss_sum = loss_sum + losses.double().sum(1)
        wrong = wrong + (logits.argmax(-1) != y).sum(1)
    n = len(split)
    return (loss_sum / n).cpu().numpy(), (wrong.double() / n).cpu().numpy()
