"""Backbones, the MSE head, and the network that ties a backbone to a head.

A network sees standardised inputs and predicts standardised targets internally; its forward
pass always returns predictions in data units (a Mixture for the MDN head, a tensor for
the MSE head), so metrics and figures never deal with the scaling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from mdn_experiments import mdn, memory
from mdn_experiments.errors import ConfigError, UserError
from mdn_experiments.mdn import Mixture

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
# activations a 2x2 max-pool commutes with bit for bit (ties included): the CNN pools first
POOL_COMMUTES = frozenset({"relu"})


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name (one of ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_arg(ok: bool, name: str, value: object, allowed: str) -> None:
    """Range/type check of a backbone argument, reported as model.backbone.<name>."""
    if not ok:
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        raise ConfigError(f"model.backbone.{name}", value, allowed)


def check_widths(name: str, widths: object) -> None:
    check_arg(
        isinstance(widths, Sequence) and not isinstance(widths, str) and all(_is_int(w) and w >= 1 for w in widths),
        name,
        widths,
        "a list of integers >= 1, e.g. [64, 64]",
    )


def check_activation(activation: object) -> None:
    check_arg(activation in ACTIVATIONS, "activation", activation, f"one of {', '.join(sorted(ACTIVATIONS))}")


class MLP(nn.Module):
    """Fully connected backbone: (N, *input_shape) -> (N, hidden[-1]).

    members > 1: that many MLPs side by side in one module (an ensemble), (N, members * hidden[-1]):
    each layer is `members` times wider and masked block-diagonally (mdn.MaskedLinear), so member m's
    units see only the inputs and member m's units of the layer below, and each block starts as an
    MLP of its own. One forward pass runs them all."""

    def __init__(
        self, input_shape: Sequence[int], hidden: Sequence[int] = (20,), activation: str = "tanh", members: int = 1
    ) -> None:
        check_widths("hidden", hidden)
        check_activation(activation)
        check_arg(_is_int(members) and 1 <= members <= 1000, "model.members", members, "an integer from 1 to 1000")
        super().__init__()
        in_features = math.prod(int(size) for size in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for i, width in enumerate(hidden):
            mask = mdn.block_mask(members, in_features, members * width) if i > 0 else None
            layers += [mdn.MaskedLinear(in_features, members * width, mask), activation_layer(activation)]
            in_features = members * width
        self.net = nn.Sequential(*layers)
        self.out_features, self.members = in_features, members

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Convolutional backbone for images: (N, C, H, W) -> (N, hidden[-1]).

    One block per entry of `channels`: `convs_per_block` convolutions (kernel_size, padding,
    batch norm, activation), then a 2x2 max-pool (computed before the last ReLU, which gives the
    same numbers on a quarter of the elements). Then an MLP of widths `hidden`, with dropout
    before each linear layer. `channels_last`: convolve in NHWC memory layout (faster on CPU).
    `norm_after_pool`: each block's last convolution is pooled first, then normalised and
    activated (a different network, with a quarter of the normalisation work).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (128,),
        kernel_size: int = 5,
        padding: int = 0,
        convs_per_block: int = 1,
        activation: str = "relu",
        dropout: float = 0.0,
        channels_last: bool = True,
        norm_after_pool: bool = False,
    ) -> None:
        check_widths("channels", channels)
        check_widths("hidden", hidden)
        check_activation(activation)
        check_arg(_is_int(kernel_size) and kernel_size >= 1, "kernel_size", kernel_size, "an integer >= 1")
        check_arg(_is_int(padding) and padding >= 0, "padding", padding, "an integer >= 0")
        check_arg(
            _is_int(convs_per_block) and convs_per_block >= 1, "convs_per_block", convs_per_block, "an integer >= 1"
        )
        check_arg(
            isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1,
            "dropout",
            dropout,
            "a number in [0, 1)",
        )
        for name, flag in (("channels_last", channels_last), ("norm_after_pool", norm_after_pool)):
            check_arg(isinstance(flag, bool), name, flag, "true or false")
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(
                f"model.backbone: a CNN needs image inputs (channels, height, width), but this "
                f"dataset's inputs have shape {tuple(input_shape)}; use model=mlp"
            )
        in_channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out_channels in channels:
            for _ in range(convs_per_block):
                layers += [
                    nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False),
                    nn.BatchNorm2d(out_channels),
                    activation_layer(activation),
                ]
                in_channels = out_channels
                height, width = height + 2 * padding - kernel_size + 1, width + 2 * padding - kernel_size + 1
            if norm_after_pool:
                # conv, max-pool, then batch norm and activation: a different network (the norm
                # sees pooled maxima), normalising a quarter of the elements
                layers.insert(len(layers) - 2, nn.MaxPool2d(2))
            elif activation in POOL_COMMUTES:
                # max-pool(relu(x)) == relu(max-pool(x)) exactly, values and gradients alike; after
                # the pool the activation touches a quarter of the elements (parameter names stay)
                layers.insert(len(layers) - 1, nn.MaxPool2d(2))
            else:
                layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise UserError(
                    f"model.backbone: the image shrinks to nothing after {len(channels)} blocks; "
                    f"use fewer channels entries, a smaller kernel_size or more padding"
                )
        layers.append(nn.Flatten())
        features = in_channels * height * width
        for size in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(features, size), activation_layer(activation)]
            features = size
        self.net = nn.Sequential(*layers)
        self.out_features = features
        # NHWC activations and weights: the CPU's convolution kernels are written for that layout
        # (make bench measures the gain); the numbers computed are the same up to float rounding
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


class MSEHead(nn.Module):
    """Linear point prediction trained by mean squared error: (N, F) -> (N, D)."""

    def __init__(self, in_features: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)


RELATIVE_SPREAD_FLOOR = 1e-6  # a spread below this share of the values' magnitude counts as none
MOMENT_CHUNK = 1 << 18  # numbers converted to float64 at a time by `moments` (2 MiB)


def moments(values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation along the first dimension, accumulated in float64 a chunk of rows
    at a time (a float32 variance overflows from values near 1e19; a whole float64 copy of MNIST
    would cost 300 MB). The deviation is floored relative to the values' magnitude: at least
    RELATIVE_SPREAD_FLOOR * max |value|, and 1 for values that are all zero (a constant column:
    centred, it is zero whatever it is divided by). No absolute floor: any scale keeps its units."""
    n = values.shape[0]
    rows = max(1, MOMENT_CHUNK // max(1, values[0].numel()))

    def each():
        return (values[i : i + rows].contiguous().double() for i in range(0, n, rows))  # any layout, one sum

    mean = sum(chunk.sum(0) for chunk in each()) / n
    squares = sum((chunk - mean).square().sum(0) for chunk in each())
    std = (squares / max(n - 1, 1)).sqrt()
    magnitude = torch.stack([chunk.abs().amax(0) for chunk in each()]).amax(0)
    floor = RELATIVE_SPREAD_FLOOR * magnitude
    return mean, torch.where(std > floor, std, torch.where(floor > 0, floor, torch.ones_like(std)))


class Network(nn.Module):
    """Backbone + head, with input and target standardisation stored as buffers.

    forward(x) returns predictions in data units. loss(x, y) is the training objective:
    the NLL in nats per sample (MDN head) or the mean squared error of standardised
    targets (MSE head, so that every target dimension weighs the same).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, input_shape: Sequence[int], out_dim: int):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.register_buffer("x_mean", torch.zeros(*input_shape))
        self.register_buffer("x_std", torch.ones(*input_shape))
        self.register_buffer("y_mean", torch.zeros(out_dim))
        self.register_buffer("y_std", torch.ones(out_dim))
        self.backbone_dtype: torch.dtype | None = None  # trainer.precision=bf16: torch.bfloat16

    @property
    def is_mdn(self) -> bool:
        return isinstance(self.head, mdn.MDNHead)

    @property
    def loss_name(self) -> str:
        """What loss() is: "nll" (MDN head) or "mse"; history columns are train_<it> and val_<it>."""
        return "nll" if self.is_mdn else "mse"

    @torch.no_grad()
    def fit_standardization(self, x: Tensor, y: Tensor, per_feature: bool = True) -> None:
        """Set the scaling from training data. per_feature=False uses one scalar for the input
        (right for images, where per-pixel statistics are meaningless at the borders).

        Computed in float64 (a float32 variance overflows from values near 1e19), with floors
        relative to the data (spread), never absolute: a table keeps its numbers in its own units
        at any scale, and the same table scaled by s gives the same standardised values."""
        mean, std = moments(x if per_feature else x.reshape(-1, 1))
        self.x_mean.copy_(mean if per_feature else mean.reshape(()))  # broadcast over the input's shape
        self.x_std.copy_(std if per_feature else std.reshape(()))
        mean, std = moments(y)
        self.y_mean.copy_(mean)
        self.y_std.copy_(std)

    @torch.no_grad()
    def init_from_targets(self, method: str, y: Tensor, seed: int = 0) -> None:
        """Data-driven start of the MDN head from the training targets y (call after
        fit_standardization; everything happens in standardised units):

        default    the layer's random initialisation, untouched
        quantiles  component k's mean starts at the (k + 1/2)/K quantile of the targets, per
                   dimension (mean weights shrunk), so the components begin spread out
        gmm        a K-component Gaussian mixture of the head's covariance kind is fitted to the
                   targets (scikit-learn's GaussianMixture, seeded); every input starts at that
                   mixture: pi, mu and the covariances from the fit, all weights shrunk (x 0.01)
        """
        K = self.head.n_components
        z = ((y - self.y_mean) / self.y_std).double().cpu()
        if method == "quantiles":
            levels = (torch.arange(K, dtype=torch.float64) + 0.5) / K
            self.head.init_means(torch.quantile(z, levels, dim=0))  # (K, D)
        elif method == "gmm":
            self.head.init_mixture(*fit_gmm(z, K, self.head.covariance, self.head.sigma_min, seed))
        elif method != "default":
            raise ValueError(f"init must be one of {INITS}, got {method!r}")

    def forward(self, x: Tensor) -> Mixture | Tensor:
        x = x.contiguous()  # a batch of a column-major table: the same numbers, the same kernels as any
        z = (x - self.x_mean) / self.x_std
        if self.backbone_dtype is None:
            z = self.backbone(z)
        else:  # mixed precision in the backbone only: the head, the NLL's log-sum-exp and a Cholesky in float32
            with torch.autocast(z.device.type, dtype=self.backbone_dtype):
                z = self.backbone(z)
            z = z.float()
        out = self.head(z)
        if isinstance(out, Mixture):
            return out.affine(self.y_mean, self.y_std)
        return self.y_mean + self.y_std * out

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Mixture | Tensor]:
        """Training objective and the prediction it was computed from. An ensemble (an MDN head of
        several members) trains each member on its own NLL (train mode), and is scored as the
        one mixture it makes (eval mode: validation, test)."""
        out = self(x)
        if isinstance(out, Mixture):
            members = getattr(self.head, "members", 1)
            return (out.member_nll(y, members) if members > 1 and self.training else out.nll(y)), out
        return ((out - y) / self.y_std).square().sum(-1).mean(), out

    def sigma_floor_share(self, out: Mixture | Tensor) -> float:
        """Share of sigma values sitting at the floor (in standardised units); NaN for MSE."""
        if not isinstance(out, Mixture):
            return float("nan")
        floor = self.head.sigma_min * self.y_std  # relative to the target's spread: at any scale
        return (out.floored_scales() <= floor * (1 + 1e-3)).float().mean().item()


def build_network(
    backbone: nn.Module,
    input_shape: Sequence[int],
    out_dim: int,
    head: str,
    n_components: int = 1,
    sigma_min: float = 1e-3,
    sigma_transform: str = "softplus",
    covariance: str = "diag",
) -> Network:
    """Attach an 'mdn' or 'mse' head to a backbone exposing `out_features` (and `members`, an
    ensemble's size, when it has several)."""
    members = getattr(backbone, "members", 1)
    if head == "mdn":
        head_module: nn.Module = mdn.MDNHead(
            backbone.out_features, out_dim, n_components, sigma_min, sigma_transform, covariance, members
        )
    elif head == "mse":
        head_module = MSEHead(backbone.out_features, out_dim)
    else:
        raise ValueError(f"head must be 'mdn' or 'mse', got {head!r}")
    return Network(backbone, head_module, input_shape, out_dim)


INITS = ("default", "quantiles", "gmm")
SKLEARN_COVARIANCE = {"diag": "diag", "isotropic": "spherical", "full": "full"}


def require_sklearn():
    """sklearn.mixture, or one clear error when scikit-learn is not installed."""
    try:
        from sklearn import mixture
    except ImportError:
        raise UserError(
            "model.init=gmm needs scikit-learn, which is not installed: "
            "pip install scikit-learn (or the project's extra: pip install '.[gmm]')"
        ) from None
    return mixture


def fit_gmm(
    z: Tensor, n_components: int, covariance: str, sigma_min: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """A Gaussian mixture fitted to targets z (N, D) by scikit-learn, as (log_pi (K,), mu (K, D),
    covariance (K, D, D)) in float64. The covariance kind follows the head's."""
    GaussianMixture = require_sklearn().GaussianMixture
    K, D = n_components, z.shape[1]
    gmm = GaussianMixture(
        K,
        covariance_type=SKLEARN_COVARIANCE[covariance],
        reg_covar=max(1e-6, sigma_min**2),
        n_init=1,
        random_state=seed,
    ).fit(z.numpy())
    cov = torch.as_tensor(gmm.covariances_, dtype=torch.float64)
    if covariance == "diag":
        cov = torch.diag_embed(cov)
    elif covariance == "isotropic":
        cov = cov[:, None, None] * torch.eye(D, dtype=torch.float64)
    return (
        torch.as_tensor(gmm.weights_, dtype=torch.float64).log(),
        torch.as_tensor(gmm.means_, dtype=torch.float64),
        cov,
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- asking a trained network ---------------------------------------------------------------

_cache: list[tuple[Network, Tensor, Mixture | Tensor]] | None = None  # see cached_predictions


def _fields(out: Mixture | Tensor, part: Mixture | Tensor) -> list[tuple[Tensor, Tensor]]:
    """The tensors of a prediction paired with those of a batch of it."""
    if isinstance(out, Mixture):
        return [(getattr(out, f.name), getattr(part, f.name)) for f in dataclasses.fields(out)]
    return [(out, part)]


@contextlib.contextmanager
def cached_predictions():
    """Within this block, predict() answers a repeated (network, x) pair from memory: evaluation
    and figures ask the same trained networks about the same test set several times. Only for
    networks that do not change inside the block."""
    global _cache
    previous, _cache = _cache, []
    try:
        yield
    finally:
        _cache = previous


@torch.no_grad()
def predict(network: Network, x: Tensor, batch_size: int = 1024, *, cache: bool = True) -> Mixture | Tensor:
    """network(x) in batches (images need it), in eval mode. `cache=False`: never kept by
    cached_predictions (a part of a set, asked once)."""
    if _cache is not None and cache:
        for net, inputs, out in _cache:
            if net is network and inputs is x:
                return out
    network.eval()
    n = x.shape[0]
    first = network(x[:batch_size])
    if n > batch_size:  # the batches written into one output: no list of parts beside their copy

        def empty(t: Tensor) -> Tensor:
            return t.new_empty((n, *t.shape[1:]))

        out = first._map(empty) if isinstance(first, Mixture) else empty(first)
        for start in range(0, n, batch_size):
            part = first if start == 0 else network(x[start : start + batch_size])
            for field, value in _fields(out, part):
                field[start : start + batch_size] = value
        memory.give_back()  # the batches' temporaries, freed: not held under what follows
    else:
        out = first
    if _cache is not None and cache:
        _cache.append((network, x, out))
    return out


PART_ROWS = 16_384  # rows of a large set predicted and scored at once (predict_parts)


def predict_parts(
    network: Network, x: Tensor, y: Tensor, rows: int | None = None
) -> Iterator[tuple[Mixture | Tensor, Tensor]]:
    """network's predictions for x beside their targets y, a part of `rows` rows at a time, in
    order: what scoring a large set streams through, so that no prediction of the whole set is
    held (a million-row table's 100,000 test rows cost 10 MB as one 9-component mixture). A set of
    at most `rows` (default PART_ROWS) rows is one part, predicted (and cached) as predict does."""
    rows = PART_ROWS if rows is None else rows
    n = x.shape[0]
    if n <= rows:
        yield predict(network, x), y
        return
    for start in range(0, n, rows):
        yield predict(network, x[start : start + rows], cache=False), y[start : start + rows]
