"""Every config Hydra composes is checked before Hydra builds anything from it.

Hydra builds objects from a composed config before any task code runs: logging handlers
(`hydra.hydra_logging` while composing, `hydra.job_logging` when a job starts) and the callbacks
(`hydra.callbacks`, before their first hook is called). Hydra 1.3 offers no hook between composing
a config and the first object it builds, so `install()` wraps the one method every composition
goes through (the config loader's `load_configuration`: mdn-run, each job of a sweep, `--cfg`,
`--help`, and `config.compose`) with `check_composed`, which refuses, in one line:

- a config file from anywhere but the project's config tree and Hydra's own (`hydra.searchpath`,
  `--config-dir`, `--config-path`): a file there could set any of what follows;
- a `_target_` outside its allow-list (safety.TASK_SLOTS and HYDRA_SLOTS: callbacks, launcher,
  sweeper);
- a logging config that builds anything but Python's stream, file and null handlers, streams
  other than stdout and stderr, or a log file outside the run's folder;
- launcher settings outside their ranges (ranges.launcher_rules: how many processes start), and
  a search's numbers outside theirs (ranges.SWEEPER_RULES: how many trials);
- a sweep's job folder outside the sweep, or Hydra's own files outside the job's folder.

A refusal is raised as `Refused` (a BaseException, so that Hydra's own error handling, which
catches Exception, cannot turn it into a traceback); `error` holds the one-line UserError.
Torch-free.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mdn_experiments.config.compose import config_dir
from mdn_experiments.config.ranges import check_launcher, check_sweeper
from mdn_experiments.config.safety import HYDRA_SLOTS, TASK_SLOTS, UnsafeConfig, check_targets
from mdn_experiments.errors import UserError, clip

TRUSTED_PROVIDERS = ("hydra", "schema")  # Hydra's own configs; the schemas (ours, the plugins')
LOGGING_KEYS = ("version", "formatters", "filters", "handlers", "loggers", "root", "incremental")
LOGGING_HANDLERS = ("logging.StreamHandler", "logging.FileHandler", "logging.NullHandler")
LOGGING_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
LOG_FILE = re.compile(r"\$\{hydra\.runtime\.output_dir\}/(\$\{hydra\.job\.name\}|[A-Za-z0-9_][A-Za-z0-9_.-]*)\.log")


class Refused(BaseException):
    """A composed config refused by check_composed; `error` is the UserError to print."""

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        self.error = error


def _check_sources(hydra: DictConfig) -> None:
    main = str(Path(config_dir()).resolve())
    for source in OmegaConf.select(hydra, "runtime.config_sources", default=None) or []:
        provider, path = str(source.get("provider")), str(source.get("path"))
        if provider in TRUSTED_PROVIDERS or (provider == "main" and str(Path(path).resolve()) == main):
            continue
        raise UnsafeConfig(
            "",
            "hydra.searchpath" if "searchpath" in provider else "--config-dir",
            clip(path, 200),
            f"mdn-run composes only its own config tree ({main}) and Hydra's: a config file from another "
            f"folder ({provider}) could build code, so hydra.searchpath, --config-dir and --config-path "
            "are refused (put a preset in the project's conf/experiment/ instead)",
        )


def _logging_error(key: str, value: Any, allowed: str) -> UnsafeConfig:
    return UnsafeConfig("", key, clip(value, 200), allowed)


def check_logging(node: Any, key: str) -> None:
    """A Python logging config (dictConfig) that builds only stream, file and null handlers with
    plain formatters, writes to stdout, stderr or a log file in the run folder, and nothing else."""
    if node is None:
        return
    if not isinstance(node, dict):
        raise _logging_error(key, node, "a logging config (a mapping)")
    stack: list[tuple[str, Any]] = [(key, node)]
    while stack:  # no factory anywhere, no ext:// or cfg:// reference but the two streams
        where, value = stack.pop()
        if isinstance(value, dict):
            for name, item in value.items():
                if name == "()":
                    raise _logging_error(f"{where}.()", item, "no logging factory ('()' builds any object)")
                stack.append((f"{where}.{name}", item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and value.startswith(("ext://", "cfg://")) and value not in LOGGING_STREAMS:
            raise _logging_error(where, value, f"one of the streams {', '.join(LOGGING_STREAMS)}")
    for name in node:
        if name not in LOGGING_KEYS and name != "disable_existing_loggers":
            raise _logging_error(f"{key}.{name}", node[name], "a logging config key: " + ", ".join(LOGGING_KEYS))
    for name, handler in (node.get("handlers") or {}).items():
        where = f"{key}.handlers.{name}"
        if not isinstance(handler, dict) or handler.get("class") not in LOGGING_HANDLERS:
            cls = handler.get("class") if isinstance(handler, dict) else handler
            raise _logging_error(f"{where}.class", cls, "one of " + ", ".join(LOGGING_HANDLERS))
        filename = handler.get("filename")
        if filename is not None and not (isinstance(filename, str) and LOG_FILE.fullmatch(filename)):
            raise _logging_error(
                f"{where}.filename", filename, "a log file in the run's folder: ${hydra.runtime.output_dir}/NAME.log"
            )
    for name, formatter in (node.get("formatters") or {}).items():
        cls = formatter.get("class", "logging.Formatter") if isinstance(formatter, dict) else None
        if cls != "logging.Formatter":
            raise _logging_error(f"{key}.formatters.{name}.class", cls, "logging.Formatter")


def _inside(value: Any) -> bool:
    """A relative path that stays where it is put (no absolute path, no `..`)."""
    if value is None:
        return True
    path = Path(str(value))
    return bool(str(value)) and not path.is_absolute() and ".." not in path.parts


def _check_job_folders(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    """A sweep's job folder (hydra.sweep.subdir) stays inside the sweep, and Hydra's own files
    (hydra.output_subdir) inside the job's folder: `keys` are resolved now as Hydra will resolve
    them (the job's number as 0) and refused when they would leave."""
    probe = copy.deepcopy(cfg)
    with read_write(probe), open_dict(probe):
        for key, value in (("num", 0), ("id", "0")):
            if OmegaConf.is_missing(probe.hydra.job, key):
                probe.hydra.job[key] = value
    for key in keys:
        try:
            value = OmegaConf.select(probe, key, default=None)
        except Exception as err:  # noqa: BLE001 - a value that cannot be resolved now cannot be checked
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{key} cannot be resolved ({clip(reason, 200)}): no job folder can be made") from None
        if not _inside(value):
            where = "the sweep's folder" if "sweep" in key else "the job's folder"
            raise UnsafeConfig(
                "", key, clip(value, 200), f"a relative folder inside {where} (no absolute path, no '..')"
            )


def check_composed(cfg: DictConfig, sweep: bool = True) -> None:
    """Refuse (UserError) a composed config that would build what the project does not allow; see
    the module's docstring. `sweep`: the config makes sweep jobs (its hydra.sweep.subdir is used)."""
    hydra = cfg.get("hydra") if "hydra" in cfg else None
    task = {
        key: OmegaConf.to_container(cfg[key], resolve=False) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }
    check_targets(task, "", slots=TASK_SLOTS)
    if hydra is None:
        return
    _check_sources(hydra)
    parts = {
        name: OmegaConf.to_container(hydra[name], resolve=False)
        for name in ("callbacks", "launcher", "sweeper")
        if hydra.get(name) is not None
    }
    check_targets({"hydra": parts}, "", slots=HYDRA_SLOTS)
    for name in ("hydra_logging", "job_logging"):
        if hydra.get(name) is not None:
            check_logging(OmegaConf.to_container(hydra[name], resolve=False), f"hydra.{name}")
    if hydra.get("launcher") is not None:
        check_launcher(hydra.launcher)
    if hydra.get("sweeper") is not None:
        check_sweeper(hydra.sweeper)
    _check_job_folders(cfg, ("hydra.sweep.subdir", "hydra.output_subdir") if sweep else ("hydra.output_subdir",))


_installed = False


def _check(cfg: DictConfig, sweep: bool) -> None:
    try:
        check_composed(cfg, sweep)
    except UserError as err:
        raise Refused(err) from None


def install() -> None:
    """Have every composition check its result (check_composed) before Hydra uses it. Idempotent."""
    global _installed
    if _installed:
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    load, load_sweep = ConfigLoaderImpl.load_configuration, ConfigLoaderImpl.load_sweep_config

    def load_configuration(self, config_name, overrides, run_mode, from_shell=True, validate_sweep_overrides=True):
        cfg = load(self, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        # a sweep about to start (not Hydra's look at the mode, which does not validate): its job
        # folders are checked now, before Hydra writes multirun.yaml, and again as each job is composed
        _check(cfg, sweep=str(run_mode).endswith("MULTIRUN") and validate_sweep_overrides)
        return cfg

    def load_sweep_config(self, master_config, sweep_overrides):
        cfg = load_sweep(self, master_config, sweep_overrides)
        _check(cfg, sweep=True)
        return cfg

    ConfigLoaderImpl.load_configuration = load_configuration
    ConfigLoaderImpl.load_sweep_config = load_sweep_config
    _installed = True


def list_groups_once() -> None:
    """For `--help`: Hydra lists each config group's options from a new deep copy of the whole
    config repository, a hundred copies for this project's groups and its own (a second on 2
    cores); one copy serves them all, since a listing changes nothing in it. Only the listing
    (no config name, no overrides) is served from the one copy; compositions are untouched."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    create = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    shared: dict[int, Any] = {}

    def listing_repo(self, config_name, overrides):
        if config_name is not None or overrides:
            return create(self, config_name, overrides)
        if id(self) not in shared:
            shared[id(self)] = create(self, config_name, overrides)
        return shared[id(self)]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = listing_repo
