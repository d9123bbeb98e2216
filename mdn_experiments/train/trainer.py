"""One readable training loop: minibatches or full batch, gradient clipping, a learning-rate
schedule, validation every epoch, best-validation weights kept, a non-finite guard that rolls
back, and a training state that resumes bit for bit.

`Trainer` holds everything a phase of training needs (network, optimizer, scheduler, the
minibatch RNG, progress, history, best weights); `state_dict()` captures it as plain data and
`load_state_dict()` puts it back, so a run killed between two optimizer steps continues exactly
as if it had never stopped (on the CPU). `fit()` is the one-call form.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mdn_experiments import memory
from mdn_experiments.config.schema import LrSchedule, OnNonfinite
from mdn_experiments.config.settings import TrainSettings
from mdn_experiments.errors import UserError
from mdn_experiments.evaluation.health import HealthSum, dead_mask
from mdn_experiments.mdn import Mixture
from mdn_experiments.models import Network, cached_predictions, predict  # noqa: F401  (re-exported)
from mdn_experiments.train.state import rng_state, set_rng_state


@dataclass
class FitResult:
    """What fit() returns: per-epoch history rows, the epoch whose weights were kept, timing,
    and what the non-finite guard did: `rollbacks` lists each one ({epoch, step, reason, lr}),
    `diverged` is the reason training was stopped by the guard ("" if it was not)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    steps: int = 0
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    diverged: str = ""
    revivals: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Progress(FitResult):
    """FitResult plus where the loop stands: epochs completed, minibatches done in the current
    epoch (its order and the losses so far), consecutive failures, finished or not."""

    epoch: int = 0
    batch: int = 0
    order: Tensor | None = None
    losses: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    failures: int = 0
    finished: bool = False
    hook_state: dict[str, Any] = field(default_factory=dict)  # what epoch hooks must keep across a resume

    def result(self) -> FitResult:
        return FitResult(**{name: getattr(self, name) for name in FitResult.__dataclass_fields__})


class NonFinite(Exception):
    """A non-finite training loss, gradient norm or validation loss (handled by the guard)."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, otherwise the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _batch_order(n: int, batch_size: int | None, generator: torch.Generator) -> Tensor | None:
    """The epoch's shuffled order, or None for full batch (no shuffling needed, no copy made)."""
    if batch_size is None or batch_size >= n:
        return None
    with memory.mapped_blocks():  # a large set's order mapped on its own: unmapped when the epoch ends,
        # not a hole left in the heap by each epoch; 4 B a row (int32: the same draws as int64's order)
        return torch.randperm(n, generator=generator, dtype=torch.int32 if n < 2**31 else torch.int64)


def _batches(n: int, batch_size: int | None, order: Tensor | None) -> list[Tensor | slice]:
    if order is None:
        return [slice(None)]
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


def shift_images(x: Tensor, most: int, generator: torch.Generator) -> Tensor:
    """Each image of `x` (N, C, H, W) moved by its own random whole-pixel offset, up to `most`
    pixels along each axis (uniform over -most..most), the uncovered border filled with zeros."""
    n, _, height, width = x.shape
    dy, dx = torch.randint(-most, most + 1, (2, n), generator=generator).to(x.device)
    padded = nn.functional.pad(x, (most, most, most, most))
    # every shifted window of the padded images, as a view: (N, C, 2 most + 1, 2 most + 1, H, W);
    # picking one window per image copies whole rows (4x faster than indexing pixel by pixel)
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)
    return windows[torch.arange(n, device=x.device), :, most - dy, most - dx]


def _clone(obj: Any) -> Any:
    """A copy of nested dicts, lists and tuples whose tensors are cloned (other leaves are
    immutable: numbers, strings, None): what a state snapshot needs, at a fraction of
    copy.deepcopy's cost (the per-epoch rollback snapshot was 8 % of a toy training run)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        out = type(obj)((key, _clone(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):  # a module state_dict's version information
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(value) for value in obj)
    return obj


@torch.no_grad()
def evaluate_loss(network: Network, x: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, dict[str, float]]:
    """Mean training objective over a dataset, and diagnostics: `sigma_floor_share` (NaN for an
    MSE network) and, for an MDN, the component health of `evaluation.health`."""
    network.eval()
    total, floor, n = 0.0, 0.0, x.shape[0]
    components = HealthSum()  # a batch at a time: the set's mixtures are not kept
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        loss, out = network.loss(xb, yb)
        total += loss.item() * xb.shape[0]
        floor += network.sigma_floor_share(out) * xb.shape[0]
        if isinstance(out, Mixture):
            components.add(out, yb)
    diagnostics = {"sigma_floor_share": floor / n}
    if components.n:
        diagnostics.update(components.result())
    return total / n, diagnostics


@torch.no_grad()
def clip_gradients(params: list[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients of `params` in place so that their total 2-norm is at most `max_norm`;
    return the norm before scaling. The arithmetic of torch.nn.utils.clip_grad_norm_ (the same
    numbers, bit for bit: a test compares them) without its per-call grouping of the tensors by
    device and dtype, which cost a small network's step a twentieth of its time: a trainer's
    parameters are all on one device, in float32."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def _optimizer_step(
    optimizer: torch.optim.Optimizer, network: Network, params: list[Tensor], x: Tensor, y: Tensor, max_norm: float
) -> tuple[float, float]:
    """One optimizer step through a closure; returns the loss and the gradient norm (before
    clipping) at the weights the step started from. `params`: the network's parameters, listed
    once (the optimizer's).

    First-order optimizers call the closure once. L-BFGS calls it again at every trial point of
    its line search; only the first call is logged and checked. A non-finite loss or gradient at
    the starting weights raises NonFinite before any weight or optimizer state has changed.
    """
    first: list[float] = []

    def closure() -> Tensor:
        for param in params:  # optimizer.zero_grad(set_to_none=True), without its per-call wrapper
            param.grad = None
        loss, _ = network.loss(x, y)
        loss.backward()
        norm = clip_gradients(params, max_norm)  # the norm before clipping: what we log
        if not first:
            first.extend((loss.item(), norm.item()))
            if not (math.isfinite(first[0]) and math.isfinite(first[1])):
                raise NonFinite(f"loss={first[0]:.4g}, gradient norm={first[1]:.4g}")
        return loss

    optimizer.step(closure)
    return first[0], first[1]


class Trainer:
    """Trains `network` in place on `train`, validating on `val` after every epoch, as `settings`
    (a TrainSettings) says.

    Each epoch is one pass over `train` in minibatches of `batch_size` (None: full batch).
    `input_noise` > 0 adds Gaussian jitter to the training inputs, its std in units of the
    input's standard deviation: a smoothness regulariser (Bishop 1995, training with noise);
    `target_noise` does the same to the training targets (in target standard deviations), the
    noise regularisation Rothfuss et al. (2019) found the strongest for MDNs.
    Any torch.optim optimizer works, L-BFGS included (its line search re-evaluates the loss
    through a closure; pair it with grad_clip=None, since clipping distorts the curvature it
    builds). Every history row holds: epoch, train_nll or train_mse (the network's loss_name; the
    mean over the epoch's minibatches), val_nll or val_mse, grad_norm (mean total gradient norm
    *before* clipping), grad_norm_max,
    sigma_floor_share (validation set), lr, rollbacks (how many happened in that epoch), seconds
    (training time so far) and, for an MDN, the component health of `evaluation.health` on the
    validation set (effective_components, dead_components, responsibility_entropy).

    `random_shift` > 0 (image inputs only): each training image is moved by its own random offset of
    up to that many whole pixels along each axis, drawn from the minibatch RNG (so a resumed run
    draws the same offsets).
    `ema` (a decay d in (0, 1), or None): after every step the trainer moves an exponential moving
    average of the weights (and of the batch-norm statistics) towards the live ones, by
    1 - min(d, (1 + t) / (10 + t)) at step t, so that the first steps do not drag the random
    initialisation along. Validation, the best weights kept, patience and the history's validation
    columns then use the averaged weights; the live ones go on training.

    Non-finite guard: a step whose loss or gradient is not finite is not applied, and neither is
    an epoch whose validation loss is not finite. With on_nonfinite="rollback" the trainer goes
    back to the start of the epoch (weights, optimizer, schedule, RNGs), multiplies the learning
    rate by `rollback_lr_factor` and tries again; after `max_consecutive_rollbacks` failures in a
    row, or at the first one with on_nonfinite="stop", training stops and `diverged` says why.
    Either way the network ends holding its best-validation weights.

    `on_event(trainer, event)` is called after every applied step ("step") and every epoch
    ("epoch"): the place to checkpoint or to stop (it may raise to leave the loop).
    `epoch_hooks`: callables hook(trainer, history_row) run after each epoch's row is written and
    the best weights are kept; they may change the network (e.g. `ReviveDead`) and add columns.
    """

    def __init__(
        self,
        network: Network,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        settings: TrainSettings,
        *,
        optimizer_factory: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
        seed: int = 0,
        epoch_hooks: Sequence[Callable[[Trainer, dict[str, Any]], None]] = (),
        progress: bool = False,
        desc: str = "train",
        on_event: Callable[[Trainer, str], None] | None = None,
    ) -> None:
        self.network, self.train_data, self.val_data, self.settings = network, train, val, settings
        epochs, batch_size, lr = settings.epochs, settings.batch_size, settings.lr
        self.epochs, self.batch_size, self.patience = epochs, batch_size, settings.patience
        self.max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf
        self.input_noise, self.on_nonfinite = settings.input_noise, settings.on_nonfinite
        self.target_noise = settings.target_noise
        self.random_shift = settings.random_shift
        if self.random_shift and train[0].dim() != 4:
            raise UserError(
                f"trainer.random_shift={self.random_shift} moves images, but this data's inputs have shape "
                f"{tuple(train[0].shape[1:])}; use trainer.random_shift=0 (trainer.input_noise jitters other inputs)"
            )
        self.ema = settings.ema
        # the averaged weights: a second copy of the network, validated in the live one's place
        self.averaged = copy.deepcopy(network) if settings.ema is not None else None
        self.rollback_lr_factor = settings.rollback_lr_factor
        self.max_consecutive_rollbacks = settings.max_consecutive_rollbacks
        self.show_progress, self.desc, self.on_event = progress, desc, on_event
        self.epoch_hooks = list(epoch_hooks)

        self.generator = torch.Generator().manual_seed(seed)
        self.params = list(network.parameters())
        self.optimizer = optimizer_factory(self.params, lr=lr)
        n_train = train[0].shape[0]
        steps_per_epoch = 1 if batch_size is None else math.ceil(n_train / min(batch_size, n_train))
        total_steps = epochs * steps_per_epoch
        if settings.lr_schedule == LrSchedule.cosine:
            lr_min_factor = settings.lr_min_factor
            # decay to lr * lr_min_factor over the whole run; per optimizer step, not per epoch
            factor = lambda step: (
                lr_min_factor
                + (1 - lr_min_factor)
                * 0.5
                * (  # noqa: E731
                    1 + math.cos(math.pi * min(step, total_steps) / total_steps)
                )
            )
        else:
            factor = lambda step: 1.0  # noqa: E731
        # the learning rate is always base_lr * factor(step): a rollback scales base_lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.progress = Progress()
        self.best_state = _clone(network.state_dict())
        self._good: dict[str, Any] | None = None  # snapshot at the start of the epoch (rollbacks)
        self._segment_start = time.perf_counter()
        self._bar = tqdm(disable=True)  # run() opens the real one

    # --- state ---------------------------------------------------------------------------------

    def _modules_state(self) -> dict[str, Any]:
        """Weights, optimizer, schedule and every RNG, copied: what both a checkpoint and a
        rollback snapshot hold."""
        state = {
            "network": _clone(self.network.state_dict()),
            "optimizer": _clone(self.optimizer.state_dict()),
            "scheduler": _clone(self.scheduler.state_dict()),
            "generator": self.generator.get_state(),
            "rng": rng_state(),
        }
        if self.averaged is not None:
            state["averaged"] = _clone(self.averaged.state_dict())
        return state

    def _load_modules_state(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here, as plain data (weights_only-loadable)."""
        # asdict copies every field: not the epoch's order (4 B a training row, never changed in place)
        progress = asdict(replace(self.progress, order=None))
        progress["order"] = self.progress.order
        progress["seconds"] = self.progress.seconds + time.perf_counter() - self._segment_start
        return {**self._modules_state(), "best_state": _clone(self.best_state), "progress": progress}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_modules_state(state)
        self.best_state = _clone(state["best_state"])
        self.progress = Progress(**copy.deepcopy(state["progress"]))
        loss = self.network.loss_name  # a state saved before the columns were named after the loss
        self.progress.history = [
            {{"train_loss": f"train_{loss}", "val_loss": f"val_{loss}"}.get(k, k): v for k, v in row.items()}
            for row in self.progress.history
        ]
        self._segment_start = time.perf_counter()

    def _snapshot(self) -> dict[str, Any]:
        """What a rollback restores: history, best weights and the rollback record are left as
        they are (a failed epoch adds nothing to them)."""
        p = self.progress
        return {**self._modules_state(), "where": (p.epoch, p.batch, p.order, list(p.losses), list(p.norms), p.steps)}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self._load_modules_state(snapshot)
        p = self.progress
        p.epoch, p.batch, p.order, losses, norms, p.steps = snapshot["where"]
        p.losses, p.norms = list(losses), list(norms)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> FitResult:
        """Train until the last epoch, patience or the guard stops it; keep the best weights."""
        p = self.progress
        x_train, y_train = self.train_data
        n_train = x_train.shape[0]
        # counted in training rows: the bar shows rows/s and the time left at the full epoch count
        # (an early stop ends it sooner)
        done = p.epoch * n_train + (min(p.batch * self.batch_size, n_train) if self.batch_size else 0)
        bar = self._bar = tqdm(
            total=self.epochs * n_train,
            initial=done,
            desc=self.desc,
            unit="rows",
            unit_scale=True,
            disable=not self.show_progress,
            file=sys.stderr,
            leave=False,
        )
        while not p.finished and p.epoch < self.epochs:
            if p.batch == 0:  # a new epoch: remember it (what a rollback returns to), then shuffle
                self._good = self._snapshot()
                p.order = _batch_order(n_train, self.batch_size, self.generator)
                p.losses, p.norms = [], []
            elif self._good is None:  # resumed in the middle of an epoch: start from here
                self._good = self._snapshot()
            try:
                self._run_epoch(x_train, y_train, n_train)
                validated = self.network if self.averaged is None else self.averaged
                val_loss, diagnostics = evaluate_loss(validated, *self.val_data)
                if not math.isfinite(val_loss):
                    raise NonFinite(f"validation loss={val_loss}")
            except NonFinite as err:
                if not self._roll_back(str(err)):
                    break
                continue
            p.epoch, p.batch, p.order, p.failures = p.epoch + 1, 0, None, 0
            p.history.append(
                {
                    "epoch": p.epoch,
                    f"train_{self.network.loss_name}": sum(p.losses) / len(p.losses),
                    f"val_{self.network.loss_name}": val_loss,
                    "grad_norm": sum(p.norms) / len(p.norms),
                    "grad_norm_max": max(p.norms),
                    **diagnostics,
                    "lr": self.lr,
                    "rollbacks": sum(r["epoch"] == p.epoch for r in p.rollbacks),
                    "seconds": p.seconds + time.perf_counter() - self._segment_start,  # training time so far
                }
            )
            if val_loss < p.best_val_loss:
                p.best_val_loss, p.best_epoch = val_loss, p.epoch
                self.best_state = _clone(validated.state_dict())
            for hook in self.epoch_hooks:  # after the best weights are kept: a hook may change them
                hook(self, p.history[-1])
            bar.set_postfix(
                epoch=p.epoch, train=f"{p.losses[-1]:.3f}", val=f"{val_loss:.3f}", best=f"{p.best_val_loss:.3f}"
            )
            if self.patience is not None and p.epoch - p.best_epoch >= self.patience:
                break
            if self.on_event is not None:
                self.on_event(self, "epoch")
        bar.close()
        p.finished = True
        self.network.load_state_dict(self.best_state)
        self.network.eval()
        p.seconds += time.perf_counter() - self._segment_start
        self._segment_start = time.perf_counter()
        return p.result()

    def _run_epoch(self, x_train: Tensor, y_train: Tensor, n_train: int) -> None:
        """The remaining minibatches of the current epoch."""
        p = self.progress
        self.network.train()
        batches = _batches(n_train, self.batch_size, p.order)
        while p.batch < len(batches):
            index = batches[p.batch]
            xb, yb = x_train[index], y_train[index]
            if self.random_shift:
                xb = shift_images(xb, self.random_shift, self.generator)
            if self.input_noise > 0:
                noise = torch.randn(xb.shape, generator=self.generator).to(xb.device)
                xb = xb + self.input_noise * self.network.x_std * noise
            if self.target_noise > 0:
                noise = torch.randn(yb.shape, generator=self.generator).to(yb.device)
                yb = yb + self.target_noise * self.network.y_std * noise
            loss, norm = _optimizer_step(self.optimizer, self.network, self.params, xb, yb, self.max_norm)
            self.scheduler.step()
            p.steps, p.batch = p.steps + 1, p.batch + 1
            if self.averaged is not None:
                self._average(p.steps)
            p.losses.append(loss)
            p.norms.append(norm)
            if self.show_progress:
                self._bar.update(n_train if isinstance(index, slice) else len(index))
            if self.on_event is not None:
                self.on_event(self, "step")
                self.network.train()  # the hook may have evaluated

    @torch.no_grad()
    def _average(self, step: int) -> None:
        """Move the averaged weights towards the live ones after optimizer step `step` (1, 2, ...)."""
        weight = 1 - min(self.ema, step / (9 + step))  # (1 + t) / (10 + t) with t = step - 1
        for averaged, live in zip(self.averaged.state_dict().values(), self.network.state_dict().values()):
            if averaged.is_floating_point():
                averaged.lerp_(live, weight)
            else:  # counters (batch norm's num_batches_tracked) are copied
                averaged.copy_(live)

    def _roll_back(self, reason: str) -> bool:
        """Record a failure at the current point; go back to the epoch's start with a smaller
        learning rate. False when training must stop instead."""
        p = self.progress
        # a failed step is the next one; a failed validation comes after the epoch's last step
        step = p.batch if reason.startswith("validation") else p.batch + 1
        where = {"epoch": p.epoch + 1, "step": step, "reason": reason, "lr": self.lr}
        p.failures += 1
        stop = self.on_nonfinite == OnNonfinite.stop or p.failures > self.max_consecutive_rollbacks
        if stop:
            p.diverged = f"non-finite {reason} at epoch {where['epoch']} step {where['step']} ({self.desc})" + (
                f" after {p.failures - 1} rollbacks in a row" if self.on_nonfinite == OnNonfinite.rollback else ""
            )
            return False
        p.rollbacks.append(where)
        self._restore(self._good)
        self.scheduler.base_lrs = [base * self.rollback_lr_factor for base in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= self.rollback_lr_factor
        self._good = self._snapshot()
        return True


class ReviveDead:
    """Epoch hook: a component whose pi has stayed below `evaluation.contract.DEAD_PI` on every validation
    input for `after` epochs in a row is re-seeded by splitting the most used component (largest
    average pi on the validation set) into it (`MDNHead.split_into`); the optimizer forgets its
    statistics for the rewritten rows. Adds the column `revived` (components revived at that
    epoch) and one entry per revival to `FitResult.revivals` ({epoch, component, from}).

    Measured alternative, dropped: re-seeding at the worst-explained training target left the
    component dead again within an epoch (toy K=10: 107 revivals per run, still 4 dead)."""

    def __init__(self, after: int = 10) -> None:
        self.after = after

    @torch.no_grad()
    def __call__(self, trainer: Trainer, row: dict[str, Any]) -> None:
        p, network = trainer.progress, trainer.network
        row["revived"] = 0
        mixture = predict(network, trainer.val_data[0])
        dead = dead_mask(mixture).tolist()
        counts = p.hook_state.setdefault("dead_epochs", [0] * len(dead))
        counts[:] = [c + 1 if d else 0 for c, d in zip(counts, dead)]
        due = [k for k, c in enumerate(counts) if c >= self.after]
        if not due or all(dead):
            return
        usage = mixture.pi.mean(0)
        for k in due:
            donor = int(usage.argmax())
            usage[donor] /= 2  # the next dead component splits the next most used one
            rows = network.head.split_into(k, donor)
            _forget(trainer.optimizer, network.head.linear, rows)
            counts[k] = 0
            p.revivals.append({"epoch": p.epoch, "component": k, "from": donor})
        row["revived"] = len(due)
        network.train()


def _forget(optimizer: torch.optim.Optimizer, layer: nn.Linear, rows: list[int]) -> None:
    """Zero the optimizer's per-parameter statistics (Adam's moments, momentum) for these output rows."""
    for param in (layer.weight, layer.bias):
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value[rows] = 0


def fit(
    network: Network,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    **kwargs: Any,
) -> FitResult:
    """Train `network` in place and leave it holding the best-validation weights: Trainer(...).run().

    Keyword arguments: the fields of TrainSettings (epochs, lr, batch_size, grad_clip, lr_schedule,
    lr_min_factor, patience, input_noise, target_noise, on_nonfinite, rollback_lr_factor,
    max_consecutive_rollbacks) and Trainer's own (optimizer_factory, seed, epoch_hooks, progress,
    desc, on_event)."""
    loop = {name: kwargs.pop(name) for name in TrainSettings.FIELDS if name in kwargs}
    return Trainer(network, train, val, TrainSettings(**loop), **kwargs).run()
