"""A run folder is data, never code: which `_target_` a config may name, and which Hydra
overrides a file may replay.

Configs reach Hydra's `instantiate` from the command line and from run folders (model.pt and
state.pt hold the run's config; `.hydra/hydra.yaml` and `multirun.yaml` hold the overrides that
`mdn-resume` replays). Hydra imports and calls whatever a `_target_` names, at any depth, and its
own blocklist leaves most of the standard library callable. So every `_target_` is checked here,
before anything is instantiated, against an explicit allow-list per place:

    dataset              the project's datasets
    model.backbone       the project's backbones
    trainer.optimizer    the torch.optim optimizers the trainer supports
    hydra.callbacks.*    the project's two callbacks
    hydra.launcher       Hydra's basic launcher, the joblib and submitit launchers
    hydra.sweeper        Hydra's basic sweeper

A `_target_` anywhere else, or naming anything else, is refused; so are Hydra's other special keys
(`_args_`, `_recursive_`, `_convert_`; `_partial_` except on the optimizer). Configs read from a
run folder were written resolved, so an interpolation (`${...}`) in one is refused as well. This
module imports neither torch nor anything a config names: checking is reading strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mdn_experiments.errors import UserError

DATASETS = (
    "mdn_experiments.datasets.inverse_sine.InverseSine",
    "mdn_experiments.datasets.robot_arm.RobotArm",
    "mdn_experiments.datasets.mnist.Mnist",
    "mdn_experiments.datasets.table.TableDataset",
    "mdn_experiments.datasets.uci.Uci",
)
BACKBONES = ("mdn_experiments.models.MLP", "mdn_experiments.models.CNN")
OPTIMIZERS = tuple(
    f"torch.optim.{name}"
    for name in (
        "Adam",
        "AdamW",
        "SGD",
        "LBFGS",
        "RMSprop",
        "Adagrad",
        "Adadelta",
        "Adamax",
        "NAdam",
        "RAdam",
        "ASGD",
        "Rprop",
    )
)
CALLBACKS = ("mdn_experiments.cli.ReleaseStderr", "mdn_experiments.tools.report.SweepSummary")
LAUNCHERS = (
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
)
SWEEPERS = (
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    "hydra_plugins.mdn_experiments_search.SearchSweeper",  # the validation-only search (mdn_experiments.search)
)

# where a _target_ may stand (a dotted path; "*" matches one key) and what it may name
TASK_SLOTS: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "model.backbone": BACKBONES,
    "trainer.optimizer": OPTIMIZERS,
}
HYDRA_SLOTS: dict[str, tuple[str, ...]] = {
    "hydra.callbacks.*": CALLBACKS,
    "hydra.launcher": LAUNCHERS,
    "hydra.sweeper": SWEEPERS,
}
SPECIAL_KEYS = ("_target_", "_args_", "_recursive_", "_convert_", "_partial_")
PARTIAL_SLOTS = ("trainer.optimizer",)  # the trainer passes the parameters and the learning rate

# Hydra settings a run folder's overrides may set when mdn-resume replays them. Anything else under
# hydra. (search paths, callbacks, logging configs, environment variables, a launcher's shell
# setup lines) could bring code in, and is refused.
REPLAYABLE_HYDRA_KEYS = (
    "hydra.run.dir",
    "hydra.sweep.dir",
    "hydra.sweep.subdir",
    "hydra.mode",
    "hydra.output_subdir",
    "hydra.verbose",
    "hydra.job.chdir",
    "hydra.launcher.",
    "hydra.sweeper.params.",
    "hydra.sweeper.n_trials",  # the search's numbers, bounded by ranges.SWEEPER_RULES
    "hydra.sweeper.seed",
    "hydra.sweeper.startup_trials",
    "hydra.sweeper.batch_size",
)
# launcher settings a folder may replay: how the jobs are scheduled, never a path, a shell line or a
# parameter passed through unread (setup, srun_args, additional_parameters, submitit_folder,
# temp_folder, ... are refused); the numbers among them are bounded by ranges.launcher_rules
REPLAYABLE_LAUNCHER_KEYS = (
    "n_jobs",
    "prefer",
    "timeout",
    "verbose",
    "batch_size",
    "timeout_min",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "mem_gb",
    "nodes",
    "name",
    "partition",
    "qos",
    "comment",
    "constraint",
    "exclude",
    "gres",
    "cpus_per_gpu",
    "gpus_per_task",
    "mem_per_gpu",
    "mem_per_cpu",
    "account",
    "signal_delay_s",
    "max_num_timeout",
    "array_parallelism",
    "stderr_to_stdout",
)
# launcher options a folder may replay (submitit's local launcher starts every job at once: typed only)
REPLAYABLE_LAUNCHERS = ("basic", "joblib", "slurm", "submitit_slurm")
PROJECT_GROUPS = ("dataset", "model", "trainer", "sweep", "experiment", "hparams_search")
OPTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
REPLAYABLE_HYDRA_GROUPS = (
    "hydra/launcher",
    "hydra/sweeper",
    "hydra/help",
    "hydra/hydra_help",
    "hydra/job_logging",
    "hydra/hydra_logging",
)


class UnsafeConfig(UserError):
    """A config or an override names code the project does not allow (one line: where, which key)."""

    def __init__(self, source: str, key: str, value: object, allowed: str) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}={value!r} is not allowed: {allowed}")
        self.source, self.key = source, key


def _slot_for(path: str, slots: Mapping[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    parts = path.split(".")
    for pattern, allowed in slots.items():
        wanted = pattern.split(".")
        if len(wanted) == len(parts) and all(w in ("*", p) for w, p in zip(wanted, parts)):
            return allowed
    return None


def _join(prefix: str, key: object) -> str:
    return f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}" if prefix else str(key)


def check_targets(
    tree: Any,
    source: str = "",
    *,
    slots: Mapping[str, tuple[str, ...]] | None = None,
    prefix: str = "",
    saved: bool = False,
) -> None:
    """Walk a plain config (dicts, lists, scalars) and refuse every `_target_` outside its allow-list.

    `slots`: where a target may stand (default: the task's dataset, backbone and optimizer).
    `saved`: the config comes from a run folder, where no value may be an interpolation.
    Raises UnsafeConfig naming `source` (the file, or "command line") and the dotted key.
    """
    slots = TASK_SLOTS if slots is None else slots
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if not isinstance(key, (str, int)):
                raise UnsafeConfig(source, _join(prefix, str(key)), value, "config keys are strings")
            path = _join(prefix, key)
            if key == "_target_":
                allowed = _slot_for(prefix, slots)
                if allowed is None:
                    raise UnsafeConfig(
                        source,
                        path,
                        value,
                        "no object is built from this place of the config "
                        f"(a _target_ may stand only at {', '.join(sorted(slots))})",
                    )
                if value not in allowed:
                    raise UnsafeConfig(source, path, value, f"one of {', '.join(allowed)}")
            elif key in SPECIAL_KEYS:
                if not (key == "_partial_" and prefix in PARTIAL_SLOTS and value is True):
                    raise UnsafeConfig(
                        source,
                        path,
                        value,
                        f"{key} is not used by this project"
                        + (" (only trainer.optimizer._partial_=true)" if key == "_partial_" else ""),
                    )
            check_targets(value, source, slots=slots, prefix=path, saved=saved)
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            check_targets(value, source, slots=slots, prefix=_join(prefix, index), saved=saved)
    elif saved and isinstance(tree, str) and "${" in tree:
        raise UnsafeConfig(
            source,
            prefix,
            tree,
            "a plain value (a saved config is stored resolved; an interpolation in it means the file was edited)",
        )
    elif tree is not None and not isinstance(tree, (str, int, float, bool)):
        raise UnsafeConfig(source, prefix, type(tree).__name__, "a number, a string, a list or a mapping")


def _override_key(override) -> str:
    return override.key_or_group if override.package is None else f"{override.key_or_group}@{override.package}"


def _plain(value: Any) -> Any:
    """A parsed override value as plain data (quoted strings as their text)."""
    from hydra.core.override_parser.types import QuotedString

    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _values(override) -> list[Any]:
    """The values an override may give its key, as plain data: one, or each choice of a sweep."""
    if not override.is_sweep_override():
        return [_plain(override.value())]
    try:
        return [_plain(choice) for choice in override.sweep_iterator()]
    except Exception:  # noqa: BLE001 - an interval sweep has no finite list of values: numbers only
        return []


def parse_overrides(overrides: Iterable[str], source: str) -> list:
    """Hydra's own parse of override strings; a line Hydra cannot parse is refused here."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        if not isinstance(text, str):
            raise UnsafeConfig(source, "overrides", text, "a list of override strings")
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as err:
            raise UnsafeConfig(source, "override", text, f"a valid Hydra override ({' '.join(str(err).split())[:120]})")
    return parsed


def check_overrides(overrides: Iterable[str], source: str, *, replay: bool) -> list:
    """Refuse every override that would build an object Hydra or the run is not allowed to build.

    Every `_target_` an override sets, as a key (`a.b._target_=X`) or inside a value
    (`a.b={_target_: X}`), must stand in its slot and name an allowed class, for the task and for
    Hydra's callbacks, launcher and sweeper. `replay=True` (overrides read back from a run folder
    by mdn-resume) also limits the Hydra settings to REPLAYABLE_HYDRA_KEYS and the config groups to
    the project's and Hydra's own. Returns the parsed overrides.
    """
    parsed = parse_overrides(overrides, source)
    slots = {**TASK_SLOTS, **HYDRA_SLOTS}
    for override in parsed:
        key = override.key_or_group
        if override.is_delete():
            continue
        if override.is_package_rename() if hasattr(override, "is_package_rename") else override.package:
            raise UnsafeConfig(source, _override_key(override), override.input_line, "an override without @package")
        text = override.input_line
        choices = _values(override)
        if ("/" in key or key in PROJECT_GROUPS) and all(isinstance(v, str) or v is None for v in choices):
            # a config group choice: an option of the config tree or of a plugin
            if replay and key not in PROJECT_GROUPS + REPLAYABLE_HYDRA_GROUPS:
                raise UnsafeConfig(
                    source, key, text, f"a choice of {', '.join(PROJECT_GROUPS + REPLAYABLE_HYDRA_GROUPS)}"
                )
            if replay and not all(v is None or OPTION_NAME.fullmatch(v) for v in choices):
                raise UnsafeConfig(source, key, text, "the name of an option (letters, digits, _ . -), not a path")
            if replay and key == "hydra/launcher" and not all(v in REPLAYABLE_LAUNCHERS for v in choices):
                raise UnsafeConfig(source, key, text, f"one of the launchers {', '.join(REPLAYABLE_LAUNCHERS)}")
            continue
        parts = key.split(".")
        for value in choices:
            if any(p in SPECIAL_KEYS for p in parts):
                special = next(i for i, p in enumerate(parts) if p in SPECIAL_KEYS)
                node = {parts[special]: value}
                for part in reversed(parts[special + 1 :]):
                    node = {part: node}
                check_targets(node, source, slots=slots, prefix=".".join(parts[:special]))
            else:
                check_targets(value, source, slots=slots, prefix=key)
        if replay and key.startswith("hydra."):
            if not key.startswith(REPLAYABLE_HYDRA_KEYS) or (
                key.startswith("hydra.launcher.") and (len(parts) != 3 or parts[2] not in REPLAYABLE_LAUNCHER_KEYS)
            ):
                raise UnsafeConfig(
                    source,
                    key,
                    text,
                    "one of the Hydra settings a run folder may replay: "
                    + ", ".join(k.rstrip(".") + (".*" if k.endswith(".") else "") for k in REPLAYABLE_HYDRA_KEYS)
                    + f" (hydra.launcher.* only for {', '.join(REPLAYABLE_LAUNCHER_KEYS[:6])}, ...)",
                )
    return parsed


def quote(value: str) -> str:
    """`value` as a single-quoted Hydra override value that parses back to exactly `value`
    (any path: commas, equals signs, spaces, quotes, backslashes, `${`, non-ASCII)."""
    out, backslashes = [], 0
    for index, char in enumerate(value):
        if char == "\\":
            backslashes += 1
            continue
        if char == "'":  # backslashes before a quote are escapes: double them, then escape the quote
            out.append("\\" * (2 * backslashes) + "\\'")
        elif value.startswith("${", index):  # not an interpolation: OmegaConf's escape
            out.append("\\" * (2 * backslashes) + "\\$")
        else:
            out.append("\\" * backslashes + char)
        backslashes = 0
    out.append("\\" * (2 * backslashes))  # before the closing quote
    return "'" + "".join(out) + "'"
