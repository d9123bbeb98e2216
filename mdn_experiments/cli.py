"""`mdn-run`: the thin Hydra entry point.

Composition errors (a wrong type, an unknown option or key) are raised by Hydra before our code
runs and printed by Hydra over several lines; we hold stderr back until the first job starts and
turn such a message into one line. Our own UserErrors (out-of-range values, divergence) are
printed as one line too. Exit status 2 for all of them.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import mdn_experiments.config  # noqa: F401  (registers the schemas in the ConfigStore)
from mdn_experiments import memory
from mdn_experiments.config import guard
from mdn_experiments.config.compose import composition_error, config_dir
from mdn_experiments.config.safety import check_overrides
from mdn_experiments.errors import DISK_ERRORS, Interrupted, UserError, disk_error
from mdn_experiments.errors import one_line as one_line_error
from mdn_experiments.evaluation import contract as C
from mdn_experiments.run import folders
from mdn_experiments.tools import launch
from mdn_experiments.tools.report import FAILED_JOBS

log = logging.getLogger("mdn_experiments")
PROG = "mdn-run"
HEADLINE_METRICS = (
    C.TEST_NLL,
    C.NLL_GAP,
    C.RMSE_BASELINE,
    C.POSITIONING_RMSE_TOP_PI,
    C.POSITIONING_RMSE_BASELINE,
    C.ACCURACY_TOP_PI,
    C.ACCURACY_ANY_ACTIVE,
    C.ACCURACY_BASELINE,
)  # the "done:" line


class _StderrGate(io.TextIOBase):
    """Stands in for sys.stderr while Hydra composes the config, buffering what is written.

    release() puts the real stderr back and writes the buffer out. It runs as soon as Hydra has
    composed the config (the ReleaseStderr callback); launchers and jobs never see the gate.
    """

    def __init__(self, target) -> None:
        self.target, self.buffer, self.released = target, io.StringIO(), False

    def release(self) -> None:
        if sys.stderr is self:
            sys.stderr = self.target
        if not self.released:
            self.released = True
            self.target.write(self.buffer.getvalue())

    def write(self, text: str) -> int:
        return (self.target if self.released else self.buffer).write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


_gate: _StderrGate | None = None


def _release_stderr() -> None:
    if _gate is not None:
        _gate.release()


# what `mdn-resume` continues if this process is stopped: the run folder, or the sweep folder
_resume_target: list[str] = []


def _refuse(message: str, code: int = 2) -> None:
    """One line on stderr and exit: a refusal, made before Hydra writes anything into the folder."""
    _release_stderr()
    print(f"{PROG}: error: {one_line_error(message)}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _resuming() -> bool:
    return os.environ.get(launch.RESUME_ENV) == "1"


class ReleaseStderr(Callback):
    """Hydra callback: the config is composed, so stderr goes back to normal; the output folder
    is checked (and locked) before Hydra writes anything into it."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._claim(config, folders.claim_run_folder)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._claim(config, folders.claim_sweep_folder)
        # Ctrl-C or SIGTERM: the jobs running in worker processes save their training states
        # before this process stops the sweep (which kills the workers); main() restores these
        signal.signal(signal.SIGINT, launch.stop_command)
        signal.signal(signal.SIGTERM, launch.stop_command)

    @staticmethod
    def _claim(config: DictConfig, claim) -> None:
        _release_stderr()
        os.environ["HYDRA_FULL_ERROR"] = "1"  # from here on, errors reach cli.main (one line, or a bug's traceback)
        try:
            folders.check_hydra(config)
            _resume_target[:] = [str(claim(config, _resuming()))]
        except (UserError, InstantiationException) as err:
            _refuse(one_line_error(err))
        except OmegaConfBaseException as err:  # a value that cannot be resolved (a '${' in a path, ...)
            _refuse(unresolvable(err))
        except Exception as err:  # noqa: BLE001 - Hydra turns a callback's exception into a warning and
            # runs on, unchecked and unlocked: stop here instead, saying what happened
            _refuse(f"the run's folder could not be checked ({type(err).__name__}: {err}); nothing was written")


def unresolvable(err: OmegaConfBaseException) -> str:
    """One line for a config value OmegaConf cannot resolve, naming the key."""
    key = getattr(err, "full_key", None) or "a config value"
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (
        f"{key}: {reason}: a value holding '${{' is read by Hydra as a reference to another key; a path "
        "holding '${' cannot be used (rename the file or folder)"
    )


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _run(cfg: DictConfig) -> float | None:
    _release_stderr()
    from mdn_experiments.run.runner import run_experiment, run_sweep_job  # torch & co. only once a job runs

    memory.settle("imports")
    one_process_bars()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    progress = cfg.trainer.progress if cfg.trainer.progress is not None else sys.stderr.isatty()
    threads = cfg.trainer.threads if cfg.trainer.threads is not None else threads_per_job(hydra_cfg)
    if threads is not None and 1 <= threads <= (os.cpu_count() or 1) * 64:  # validate() reports bad values
        torch_set_threads(threads)
    trust_saved = _resuming()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        metrics = run_sweep_job(cfg, run_dir, progress=progress, trust_saved_config=trust_saved)
        memory.settle("first job")  # a worker runs more jobs: what outlived this one will outlive them
        if metrics is None:
            return None
    else:
        try:
            metrics = run_experiment(cfg, run_dir, progress=progress, trust_saved_config=trust_saved)
        except (UserError, InstantiationException) as err:
            message = one_line_error(err)  # Hydra's instantiate errors span several lines
            print(f"{PROG}: error: {message}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:
            if err.errno not in DISK_ERRORS:
                raise
            print(
                f"{PROG}: error: {disk_error(err)}; what the run had saved is kept: once there is room, "
                f"continue with mdn-resume {shlex.quote(str(run_dir))}",
                file=sys.stderr,
            )
            sys.exit(1)
    summary = ", ".join(f"{key}={metrics[key]:.4g}" for key in HEADLINE_METRICS if isinstance(metrics.get(key), float))
    if metrics.get("scored_on") == "validation":  # a search's trial: no test score to show
        summary = f"{C.VAL_NLL}={metrics[C.VAL_NLL]:.4g} (a search trial: the validation part only)"
    print(f"[{PROG}] done: {summary}; metrics, figures and model in {run_dir}", flush=True)
    if isinstance(metrics.get(C.FOIL_SENTENCE), str):
        print(f"[{PROG}] {metrics[C.FOIL_SENTENCE]}", flush=True)
    if metrics["status"] != "ok":
        print(
            f"[{PROG}] warning: this run is {metrics['status']}: {metrics['status_reason']}",
            file=sys.stderr,
            flush=True,
        )
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(1)  # all files are written; the status says what they are worth
    return metrics.get(C.TEST_NLL, metrics.get(C.VAL_NLL))  # a search's trial: its validation NLL


def one_process_bars() -> None:
    """tqdm's bars lock with a thread lock in a job's process. Its default also takes a
    multiprocessing lock, a named semaphore in a launcher's worker: a worker killed when a sweep is
    stopped could not remove it, and the resource tracker warned of it at exit. A job's bars are
    never shared with another process."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def threads_per_job(hydra_cfg) -> int | None:
    """Torch threads for one job so that parallel jobs share the cores instead of fighting:
    cores / n_jobs under the joblib launcher, the job's cpus_per_task under submitit."""
    launcher = hydra_cfg.launcher
    cores = os.cpu_count() or 1
    if "n_jobs" in launcher:
        n_jobs = launcher.n_jobs if launcher.n_jobs and launcher.n_jobs > 0 else cores
        return max(1, cores // n_jobs)
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None


def torch_set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def check_command_line(argv: list[str]) -> None:
    """The overrides on the command line build only what the project allows (safety.check_overrides),
    checked before Hydra instantiates anything; a line Hydra cannot parse is left to Hydra."""
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:
        return
    try:
        check_overrides(args.overrides or [], "", replay=False)
    except UserError as err:
        if "a valid Hydra override" not in str(err):
            raise


def register_search() -> None:
    """Make the search's sweeper known to Hydra (hparams_search=...). An installed wheel puts it
    where Hydra's plugin scan looks (hydra_plugins/); an editable install does not, so it is
    registered by hand. Light: neither optuna nor torch is imported."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.mdn_experiments_search import SearchSweeper

    Plugins.instance().register(SearchSweeper)


def _worker_died(err: BaseException) -> bool:
    """A launcher's worker process was killed (joblib/loky, concurrent.futures)."""
    return type(err).__name__ in ("TerminatedWorkerError", "BrokenProcessPool")


def main() -> None:
    """Console entry point."""
    global _gate
    _resume_target.clear()  # a command run before this one in the same process (make reproduce's
    FAILED_JOBS.clear()  # steps, launch.run_here) leaves neither its folder nor its failures
    memory.one_heap()  # before torch's and pyarrow's threads start
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # a sweep sets its own
    real_stderr = sys.stderr
    _gate = _StderrGate(real_stderr)
    sys.stderr = _gate
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    try:
        guard.install()  # every composed config is checked before Hydra builds anything from it
        if {"--help", "-h"} & set(sys.argv[1:]):
            guard.list_groups_once()  # the help's listing of groups: one repository copy, not a hundred
        register_search()
        check_command_line(sys.argv[1:])
        # once composed, errors reach this function instead of Hydra's traceback printer (see
        # ReleaseStderr): a user's mistake becomes one line, a bug keeps its traceback
        _run()
        if FAILED_JOBS:
            print(
                f"{PROG}: error: {len(FAILED_JOBS)} sweep job(s) failed or are not ok (see the summary); "
                f"the others' results are kept",
                file=real_stderr,
            )
            sys.exit(1)
    except guard.Refused as refused:  # refused while composing: nothing was built or written
        _gate.release()
        print(f"{PROG}: error: {one_line_error(refused.error)}", file=real_stderr)
        sys.exit(2)
    except (Interrupted, KeyboardInterrupt) as stop:
        _gate.release()
        signum = getattr(stop, "signum", signal.SIGINT)
        target = _resume_target[0] if _resume_target else "<the run folder>"
        saved = "the training state is saved" if isinstance(stop, Interrupted) else "what was saved is kept"
        print(
            f"{PROG}: stopped by {signal.Signals(signum).name}; {saved}. Resume with: mdn-resume {shlex.quote(target)}",
            file=real_stderr,
            flush=True,
        )
        sys.exit(128 + signum)
    except SystemExit as exit_:
        if exit_.code not in (0, None) and not _gate.released:
            # Hydra failed before composing a config: a bad override; say it in one line
            message = composition_error(_gate.buffer.getvalue(), PROG)
            _gate.buffer = io.StringIO()
            print(f"{PROG}: error: {one_line_error(message)}", file=real_stderr)
            sys.exit(2)
        raise
    except UserError as err:
        _gate.release()
        print(f"{PROG}: error: {one_line_error(err)}", file=real_stderr)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - known failures in one line; anything else is a bug: traceback
        _gate.release()
        target = shlex.quote(_resume_target[0]) if _resume_target else "FOLDER"
        if isinstance(err, ConfigCompositionException):
            # a sweep's value that its key refuses, found as Hydra checks the sweep's first jobs
            # (after the multirun started: Hydra's own printer is already out of the way)
            message = composition_error(f"{err}\n{err.__cause__ or ''}", PROG)
            print(f"{PROG}: error: {one_line_error(message)}; no job ran", file=real_stderr)
            sys.exit(2)
        if isinstance(err, ValueError) and str(err).startswith("Only one of --run"):  # Hydra's own check
            print(f"{PROG}: error: {one_line_error(err)} (--cfg shows a config; leave -m out)", file=real_stderr)
            sys.exit(2)
        if _worker_died(err):
            print(
                f"{PROG}: error: a worker process of the sweep died (killed, or out of memory); the jobs that "
                f"finished are kept: continue with mdn-resume {target}",
                file=real_stderr,
            )
            sys.exit(1)
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            print(
                f"{PROG}: error: {disk_error(err)}; what was saved is kept: once there is room, continue "
                f"with mdn-resume {target}",
                file=real_stderr,
            )
            sys.exit(1)
        raise
    finally:
        for signum, handler in handlers.items():
            if handler is not None:  # None: not set from Python, nothing of ours to undo
                signal.signal(signum, handler)
        _gate.release()  # anything still buffered (warnings) is shown, never swallowed
        sys.stderr = real_stderr
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)


if __name__ == "__main__":
    # run the importable module's main, not this __main__ copy: the Hydra callbacks and the
    # launchers' pickled task function refer to mdn_experiments.cli
    from mdn_experiments.cli import main as cli_main

    cli_main()
