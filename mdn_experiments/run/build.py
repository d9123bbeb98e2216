"""Objects from settings: the dataset, both networks, the optimizer and the device a config names,
each checked before anything trains (allow-lists, ranges, the optimizer's own arguments, the
memory the run needs). Knows nothing of run folders or of the command line."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mdn_experiments.config import ModelSettings, RunSettings, logger_names, validate
from mdn_experiments.config.safety import TASK_SLOTS, check_targets
from mdn_experiments.datasets.base import Dataset, Splits
from mdn_experiments.errors import ConfigError, UserError
from mdn_experiments.models import Network, build_network, count_parameters, require_sklearn
from mdn_experiments.run import resources, tracking
from mdn_experiments.train.trainer import resolve_device


def instantiate_checked(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a UserError raised by the target comes out unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def locate(path: str) -> Any:
    """The object at a dotted import path ("torch.optim.Adam"), quietly; ImportError if none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {path!r}")


def _target_class(node: Any, key: str, kind: str, example: str) -> type:
    """The class a `{_target_: ...}` node names; ConfigError when it is not such a node."""
    if not OmegaConf.is_dict(node) or "_target_" not in node:
        raise ConfigError(
            key,
            node if not OmegaConf.is_config(node) else OmegaConf.to_container(node),
            f"a config node naming {kind}, e.g. {example}",
        )
    allowed = TASK_SLOTS[key]
    if str(node._target_) not in allowed:  # nothing outside the allow-list is ever imported
        raise ConfigError(f"{key}._target_", node._target_, f"one of {', '.join(allowed)}")
    try:
        return locate(str(node._target_))
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"{key}._target_", node._target_, f"the import path of {kind}, e.g. {example.split('=')[-1]}"
        ) from None


def _check_arguments(node: DictConfig, cls: type, key: str, reserved: tuple[str, ...]) -> None:
    """Every key of `node` is an argument of cls (and none of the ones set by code)."""
    accepted = [name for name in inspect.signature(cls).parameters if name not in ("self", "params", *reserved)]
    for name in node:
        if name.startswith("_"):
            continue
        if name in reserved:
            raise ConfigError(
                f"{key}.{name}",
                node[name],
                f"left out: {key.split('.')[0]}.{name} sets it"
                if name == "lr"
                else "left out: it is set from the dataset",
            )
        if name not in accepted:
            raise ConfigError(
                f"{key}.{name}", node[name], f"one of the arguments of {cls.__name__}: {', '.join(accepted)}"
            )


FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused optimizer kernels run


def optimizer_factory(cfg: DictConfig, device: torch.device | None = None):
    """The configured torch.optim class as a partial, checked before any training. An optimizer
    with a fused kernel (Adam, AdamW, SGD, Adagrad) gets fused=True on the CPU and on CUDA unless
    the config sets `fused` or `foreach`: the same algorithm in one kernel per step, which takes a
    fifth off a small network's training time (make bench); the numbers differ from the
    per-tensor loop's in float rounding only."""
    node = cfg.trainer.optimizer
    cls = _target_class(
        node, "trainer.optimizer", "a torch.optim optimizer", "trainer.optimizer._target_=torch.optim.Adam"
    )
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(
            "trainer.optimizer._target_",
            node._target_,
            "a torch.optim.Optimizer class, e.g. torch.optim.Adam, torch.optim.SGD or torch.optim.LBFGS",
        )
    _check_arguments(node, cls, "trainer.optimizer", reserved=("lr",))
    if node.get("_partial_") is not True:
        raise ConfigError(
            "trainer.optimizer._partial_",
            node.get("_partial_"),
            "true (the parameters and the learning rate are passed in by the trainer)",
        )
    factory = instantiate_checked(node)
    try:  # the arguments' ranges are the optimizer's own: ask it, on a throwaway parameter
        factory([torch.zeros(1, requires_grad=True)], lr=cfg.trainer.lr)
    except (ValueError, TypeError, RuntimeError) as err:
        arguments = {
            key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            for key, value in node.items()
            if not key.startswith("_")
        }
        raise ConfigError(
            "trainer.optimizer", arguments, f"arguments {cls.__name__} accepts ({' '.join(str(err).split())[:160]})"
        ) from None
    chosen = "fused" in node or "foreach" in node
    if device is not None and device.type in FUSED_DEVICES and not chosen and _accepts(cls, "fused"):
        return functools.partial(factory, fused=True)
    return factory


def _accepts(cls: type, name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def build(cfg: DictConfig, dataset: Dataset, head: str, K: int | None = None, members: int | None = None) -> Network:
    """Instantiate the configured backbone with the dataset's input shape and attach a head (an
    MDN head of K components: cfg.K unless given; an ensemble of `members`: model.members unless
    given, and always one MSE network)."""
    cls = _target_class(
        cfg.model.backbone, "model.backbone", "a backbone class", "model.backbone._target_=mdn_experiments.models.MLP"
    )
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ConfigError(
            "model.backbone._target_",
            cfg.model.backbone._target_,
            "a torch.nn.Module class with an out_features attribute, e.g. mdn_experiments.models.MLP",
        )
    _check_arguments(cfg.model.backbone, cls, "model.backbone", reserved=("input_shape", "members"))
    if members is None:
        members = int(cfg.model.get("members") or 1) if head == "mdn" else 1  # the MSE network stays one
    extra: dict[str, Any] = {}
    if members > 1:
        if "members" not in inspect.signature(cls).parameters:
            raise ConfigError("model.members", members, f"1 with {cls.__name__} (ensembles need the MLP backbone)")
        extra["members"] = members
    backbone = instantiate_checked(cfg.model.backbone, input_shape=list(dataset.input_shape), **extra)
    return build_network(
        backbone,
        dataset.input_shape,
        dataset.output_dim,
        head,
        n_components=cfg.K if K is None else K,
        sigma_min=cfg.model.sigma_min,
        sigma_transform=cfg.model.sigma_transform,
        covariance=cfg.model.get("covariance", "diag"),  # runs saved before the key existed: diag
    )


def device_for(name: str) -> torch.device:
    """resolve_device, refusing (as bad input) a device this machine does not have."""
    available = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        available.append("mps")
    try:
        device = resolve_device(name)
    except RuntimeError:
        device = None
    ok = device is not None and (
        device.type == "cpu"
        or name == "auto"
        or (device.type == "cuda" and (device.index or 0) < torch.cuda.device_count())
        or (device.type == "mps" and torch.backends.mps.is_available())
    )
    if not ok:
        raise ConfigError(
            "trainer.device",
            name,
            f"a device this machine has: {', '.join(available)}"
            + ("" if torch.cuda.device_count() else " (no CUDA GPU here)"),
        )
    return device


def make_dataset(cfg: DictConfig) -> Dataset:
    """The configured dataset object (its constructor checks its own ranges)."""
    cls = _target_class(cfg.dataset, "dataset", "a dataset class", "dataset=inverse_sine")
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise ConfigError("dataset._target_", cfg.dataset._target_, "a subclass of mdn_experiments.datasets.Dataset")
    return instantiate_checked(cfg.dataset)


def check_config(cfg: DictConfig, source: str = "") -> tuple[Dataset, torch.device]:
    """Every check that can be made before training: the objects the config names (allow-lists,
    at every depth), ranges, the dataset's arguments, the device, the optimizer, the backbone and
    the memory the run needs. Raises a UserError (one line for the CLI) on bad input; `source`
    names where the config came from."""
    check_targets(OmegaConf.to_container(cfg, resolve=True), source)
    validate(cfg)
    dataset = make_dataset(cfg)
    device = device_for(cfg.trainer.device)
    optimizer_factory(cfg)  # refuses a bad optimizer now, not after the MDN has trained
    shape = tuple(dataset.input_shape)
    if cfg.trainer.random_shift and len(shape) != 3:  # before a run folder exists (the trainer checks too)
        raise ConfigError(
            "trainer.random_shift",
            cfg.trainer.random_shift,
            f"0 for {dataset.name}: it moves images, and these inputs have shape {shape} "
            "(trainer.input_noise jitters them)",
        )
    if cfg.model.init == "gmm":
        require_sklearn()
        if cfg.K > dataset.n_train:
            raise ConfigError(
                "K",
                cfg.K,
                f"at most dataset.n_train={dataset.n_train} with model.init=gmm (a "
                "Gaussian mixture needs a training point per component)",
            )
    tracking.check(logger_names(cfg.get("logger", "csv")))  # a chosen logger's package is installed
    with torch.device("meta"):  # built without memory: a bad backbone is refused, sizes are counted
        networks = [build(cfg, dataset, head) for head in ("mdn", "mse")]
    check_memory(cfg, dataset, device, networks)
    return dataset, device


def check_memory(cfg: DictConfig, dataset: Dataset, device: torch.device, networks: list[Network]) -> None:
    """Refuse (ResourceError, with the estimate) a run whose memory cannot fit on `device`."""
    sizes = [dataset.n_train, dataset.n_val, dataset.n_test]
    batch = cfg.trainer.batch_size or dataset.n_train
    estimate = resources.run_estimate(
        n_data=sum(sizes),
        input_size=math.prod(dataset.input_shape),
        out_dim=dataset.output_dim,
        K=cfg.K,
        n_eval=max(dataset.n_val, dataset.n_test),
        parameters=sum(count_parameters(n) for n in networks),
        activations_per_input=max(resources.activation_count(n, dataset.input_shape) for n in networks),
        batch=min(batch, dataset.n_train),
    )
    estimate.check(
        resources.available_memory(str(device)),
        f"this run (K={cfg.K}, {sum(sizes)} examples)",
        "use a smaller K, smaller data sets (dataset.n_train, n_val, n_test), a smaller "
        "trainer.batch_size or a smaller model",
    )


def prepare_network(model: ModelSettings, seed: int, network: Network, dataset: Dataset, splits: Splits) -> None:
    """Data-dependent initialisation: standardisation and (MDN) the head's start (model.init)."""
    if model.standardize:
        network.fit_standardization(*splits.train, per_feature=dataset.per_feature_standardization)
    if network.is_mdn:
        network.init_from_targets(model.init, splits.train[1], seed=seed)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX tiles (elsewhere bf16 is emulated and slower than float32). torch's CPU
    feature checks are private: where one is missing or fails, the answer is no."""
    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
        if device.type == "cpu":
            return any(bool(getattr(torch.cpu, check, lambda: False)()) for check in CPU_BF16_CHECKS)
    except Exception:  # noqa: BLE001 (a probe of the hardware: no answer is a no)
        return False
    return False


CPU_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def backbone_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """trainer.precision on this device: torch.bfloat16 for the backbone's autocast, or None (float32)."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


@dataclass
class RunObjects:
    """What a run is built from: its settings and the objects its config names. Below this, no
    code sees the config."""

    settings: RunSettings
    dataset: Dataset
    device: torch.device
    optimizer_factory: Callable[..., torch.optim.Optimizer]
    network: Callable[..., Network]  # (head "mdn" | "mse", K, members) -> a fresh network; built when asked

    def prepared(self, head: str, splits: Splits, K: int | None = None, members: int | None = None) -> Network:
        """A fresh network on the run's device, standardised and started from the training data
        (an MDN of K components, an ensemble of `members`: the run's unless given)."""
        network = self.network(head, K, members).to(self.device)
        network.backbone_dtype = backbone_dtype(self.settings.precision, self.device)
        prepare_network(self.settings.model, self.settings.seed, network, self.dataset, splits)
        return network

    @property
    def gaussian(self) -> bool:
        """Whether the run trains the K=1 MDN beside its MDN (`gaussian`, else the dataset's default;
        never when the MDN itself is one Gaussian network)."""
        wanted = self.settings.gaussian if self.settings.gaussian is not None else self.dataset.compare_gaussian
        model = self.settings.model
        return bool(wanted) and (model.K > 1 or model.members > 1)


def build_run(cfg: DictConfig, source: str = "") -> RunObjects:
    """Check `cfg` (check_config) and turn it into the run's settings and objects."""
    dataset, device = check_config(cfg, source)
    return RunObjects(
        RunSettings.from_config(cfg, n_train=dataset.n_train),
        dataset,
        device,
        optimizer_factory(cfg, device),
        lambda head, K=None, members=None: build(cfg, dataset, head, K, members),
    )
