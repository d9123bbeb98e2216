"""One readable training loop: minibatches or full batch, gradient clipping, a learning-rate
schedule, validation every epoch, best-validation weights kept, a non-finite guard."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mdn_experiments.errors import TrainingDiverged
from mdn_experiments.mdn import MixtureParams
from mdn_experiments.models import Network

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class FitResult:
    """What fit() returns: per-epoch history rows, the epoch whose weights were kept, timing."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    steps: int = 0


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, otherwise the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _batches(n: int, batch_size: int | None, generator: torch.Generator) -> Iterable[Tensor | slice]:
    if batch_size is None or batch_size >= n:
        yield slice(None)  # full batch: no shuffling needed, no copy made
        return
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def predict(network: Network, x: Tensor, batch_size: int = 1024) -> MixtureParams | Tensor:
    """network(x) in batches (images need it), in eval mode."""
    network.eval()
    parts = [network(x[start : start + batch_size]) for start in range(0, x.shape[0], batch_size)]
    return MixtureParams.cat(parts) if isinstance(parts[0], MixtureParams) else torch.cat(parts)


@torch.no_grad()
def evaluate_loss(network: Network, x: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean training objective over a dataset, and the share of sigmas at the floor."""
    network.eval()
    total, floor, n = 0.0, 0.0, x.shape[0]
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        loss, out = network.loss(xb, yb)
        total += loss.item() * xb.shape[0]
        floor += network.sigma_floor_share(out) * xb.shape[0]
    return total / n, floor / n


def _optimizer_step(
    optimizer: torch.optim.Optimizer, network: Network, x: Tensor, y: Tensor, max_norm: float, where: str
) -> tuple[float, float]:
    """One optimizer step through a closure; returns the loss and the gradient norm (before
    clipping) at the weights the step started from.

    First-order optimizers call the closure once. L-BFGS calls it again at every trial point of
    its line search; only the first call is logged and checked. A non-finite loss or gradient at
    the starting weights raises TrainingDiverged (naming `where`) before any weight has changed.
    """
    first: list[float] = []

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = network.loss(x, y)
        loss.backward()
        # clip_grad_norm_ returns the norm before clipping: that is what we log
        norm = nn.utils.clip_grad_norm_(network.parameters(), max_norm)
        if not first:
            first.extend((loss.item(), norm.item()))
            if not (math.isfinite(first[0]) and math.isfinite(first[1])):
                raise TrainingDiverged(
                    f"training diverged at {where}: loss={first[0]:.4g}, gradient norm={first[1]:.4g}; "
                    f"lower trainer.lr, set trainer.grad_clip or raise model.sigma_min"
                )
        return loss

    optimizer.step(closure)
    return first[0], first[1]


def fit(
    network: Network,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    *,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    lr: float,
    epochs: int,
    batch_size: int | None = None,
    grad_clip: float | None = None,
    lr_schedule: str = "constant",
    lr_min_factor: float = 0.0,
    patience: int | None = None,
    input_noise: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train `network` in place and leave it holding the best-validation weights.

    Each epoch is one pass over `train` in minibatches of `batch_size` (None: full batch).
    `input_noise` > 0 adds Gaussian jitter to the training inputs, its std in units of the
    input's standard deviation: a smoothness regulariser (Bishop 1995, training with noise).
    Any torch.optim optimizer works, L-BFGS included (its line search re-evaluates the loss
    through a closure; pair it with grad_clip=None, since clipping distorts the curvature it
    builds). Every history row holds: epoch, train_loss (mean over the epoch's minibatches), val_loss,
    grad_norm (mean total gradient norm *before* clipping), grad_norm_max, sigma_floor_share
    (validation set) and lr. Raises TrainingDiverged on a non-finite loss or gradient.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    x_train, y_train = train
    generator = torch.Generator().manual_seed(seed)
    optimizer = optimizer_factory(network.parameters(), lr=lr)
    n_train = x_train.shape[0]
    steps_per_epoch = 1 if batch_size is None else math.ceil(n_train / min(batch_size, n_train))
    total_steps = epochs * steps_per_epoch
    if lr_schedule == "cosine":
        # decay to lr * lr_min_factor over the whole run; per optimizer step, not per epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_min_factor
            + (1 - lr_min_factor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)),
        )
    else:
        scheduler = None
    max_norm = grad_clip if grad_clip is not None else math.inf

    result = FitResult()
    best_state = copy.deepcopy(network.state_dict())
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, file=sys.stderr, leave=False)
    for epoch in bar:
        network.train()
        losses, norms = [], []
        for index in _batches(n_train, batch_size, generator):
            xb, yb = x_train[index], y_train[index]
            if input_noise > 0:
                noise = torch.randn(xb.shape, generator=generator).to(xb.device)
                xb = xb + input_noise * network.x_std * noise
            where = f"epoch {epoch} ({desc})"
            loss, norm = _optimizer_step(optimizer, network, xb, yb, max_norm, where)
            if scheduler is not None:
                scheduler.step()
            result.steps += 1
            losses.append(loss)
            norms.append(norm)

        val_loss, floor_share = evaluate_loss(network, *val)
        if not math.isfinite(val_loss):
            raise TrainingDiverged(
                f"validation loss is {val_loss} at epoch {epoch} ({desc}); lower trainer.lr "
                f"or raise model.sigma_min"
            )
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": sum(losses) / len(losses),
                "val_loss": val_loss,
                "grad_norm": sum(norms) / len(norms),
                "grad_norm_max": max(norms),
                "sigma_floor_share": floor_share,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(network.state_dict())
        bar.set_postfix(train=f"{losses[-1]:.3f}", val=f"{val_loss:.3f}", best=f"{result.best_val_loss:.3f}")
        if patience is not None and epoch - result.best_epoch >= patience:
            break

    network.load_state_dict(best_state)
    network.eval()
    result.seconds = time.perf_counter() - start
    return result
