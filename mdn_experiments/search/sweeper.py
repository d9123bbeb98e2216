"""The validation-only search as a Hydra sweeper: Optuna asks, Hydra's launcher runs, Optuna is told.

    mdn-run -m hparams_search=table dataset=table dataset.path=FILE dataset.target=COL

Each batch of trials (`batch_size` at once, by default as many as the launcher runs side by side)
is handed to the configured launcher (basic, joblib, SLURM) as any sweep's jobs are, one job folder
per trial (SWEEP/trial=N). A trial runs with `search.role=trial`: the run scores the validation part
only and its metrics.json holds no test score (run.evaluate.validation_only). Its objective is the
MDN's validation NLL, read back from that metrics.json. When `n_trials` trials have run, the best
trial's settings go to SWEEP/best.yaml with the exact `mdn-run` line, and run once more as
SWEEP/final: the only run of the search that scores the test part.

The study lives in SWEEP/search.journal (search.study). A stopped search continues with
`mdn-resume SWEEP`: finished trials are kept, a trial that was running is resumed in its folder
(from its training state), and the search asks for the trials still missing.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from mdn_experiments import files
from mdn_experiments.config.ranges import SWEEPER_RULES
from mdn_experiments.errors import ConfigError, RunFolderError, UserError
from mdn_experiments.search.space import Dimension, parse_space
from mdn_experiments.search.study import BEST_FILE, FINAL, import_optuna, open_study, trial_folder

log = logging.getLogger("mdn_experiments")

TRIAL_OVERRIDES = ("search.role=trial", "figures=false", "baseline=false", "gaussian=false")


class SearchSweeper(Sweeper):
    """Hydra's sweeper slot, filled by an Optuna TPE search (seeded) over `params`."""

    def __init__(
        self,
        n_trials: int = 20,
        seed: int = 0,
        startup_trials: int = 5,
        batch_size: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        given = {"n_trials": n_trials, "seed": seed, "startup_trials": startup_trials, "batch_size": batch_size}
        for rule in SWEEPER_RULES:  # the guard checked the composed config already; a direct call too
            if not rule.ok(given[rule.key]):
                raise ConfigError(f"hydra.sweeper.{rule.key}", given[rule.key], rule.allowed)
        self.n_trials, self.seed, self.startup_trials, self.batch_size = n_trials, seed, startup_trials, batch_size
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- what each job is told --------------------------------------------------------------------

    def _split(self, arguments: list[str]) -> tuple[list[str], list[Dimension]]:
        """The command line's overrides: plain ones hold for every trial; sweep ones (K=choice(1,3))
        join the searched space, replacing the preset's entry for the same key."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed, swept = [], {}
        for text, override in zip(arguments, parser.parse_overrides(arguments)):
            if override.is_sweep_override():
                swept[override.get_key_element()] = text.split("=", 1)[1]
            else:
                fixed.append(text)
        return fixed, parse_space({**self.params, **swept}, "hydra.sweeper.params")

    def _batch(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        if isinstance(n_jobs, int) and not isinstance(n_jobs, bool):
            return (os.cpu_count() or 1) if n_jobs == -1 else max(1, n_jobs)
        return 1

    def _launch(self, jobs: list[list[str]], first: int) -> None:
        self.validate_batch_is_legal(jobs)  # each job composed (and checked by the guard) first
        self.launcher.launch(jobs, initial_job_idx=first)

    # -- the search --------------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> Any:
        import_optuna()
        from optuna.trial import TrialState

        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        files.make_folder(sweep_dir)
        files.write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        fixed, space = self._split(arguments)
        if not space:
            raise UserError("hydra.sweeper.params is empty: name at least one setting to search (see docs/tuning.md)")
        study = open_study(sweep_dir, self.seed, self.startup_trials, create=True)
        distributions = {d.key: d.distribution() for d in space}

        running = [t for t in study.trials if t.state == TrialState.RUNNING]
        for trial in running:  # stopped mid-trial: the same trial, continued in its folder
            log.info("search: trial %d was running when the search stopped; it continues", trial.number)
            self._launch([self._trial_job(fixed, space, trial.params, trial.number)], trial.number)
            self._tell(study, sweep_dir, trial.number)
        while len(study.trials) < self.n_trials:
            size = min(self._batch(), self.n_trials - len(study.trials))
            trials = [study.ask(distributions) for _ in range(size)]
            self._launch([self._trial_job(fixed, space, t.params, t.number) for t in trials], trials[0].number)
            for trial in trials:
                self._tell(study, sweep_dir, trial.number)
            self._stop_if_none_can_run(study, sweep_dir)

        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise UserError(
                f"none of the {len(study.trials)} trials finished with status ok (see the error.txt and "
                f"metrics.json of the trial folders in {sweep_dir}): no settings to run on the test part"
            )
        best = min(complete, key=lambda t: (t.value, t.number))
        best_overrides = [d.override(best.params[d.key]) for d in space]
        self._write_best(sweep_dir, fixed, best, best_overrides)
        final = [*fixed, *best_overrides, "search.role=final", f"search.trial={best.number}"]
        final.append(f"hydra.sweep.subdir={FINAL}")
        log.info(
            "search: %d trials done; trial %d is best (validation NLL %.4f): its settings run on the test part in %s",
            len(study.trials),
            best.number,
            best.value,
            sweep_dir / FINAL,
        )
        self._launch([final], self.n_trials)
        return None

    def _stop_if_none_can_run(self, study, sweep_dir: Path) -> None:
        """The first batch failed as a whole, every trial before its training ended (an error.txt,
        no metrics.json): a mistake of the command line (a missing file, a wrong column) that every
        further trial would meet too. Stop with the first trial's error instead of running them."""
        from optuna.trial import TrialState

        if any(t.state == TrialState.COMPLETE for t in study.trials):
            return
        folders = [sweep_dir / trial_folder(t.number) for t in study.trials]
        if not folders or any((f / "metrics.json").exists() or not (f / "error.txt").exists() for f in folders):
            return
        try:
            first = files.read_text(folders[0] / "error.txt").splitlines()[0]
        except (UserError, OSError, IndexError):
            first = "see its error.txt"
        reason = first.split(": ", 1)[-1]  # less the exception's name
        raise UserError(
            f"every trial of the first batch failed before training ended ({folders[0].name}: {reason}); "
            f"fix the command line and start the search again (the trial folders in {sweep_dir} say more)"
        )

    def _trial_job(self, fixed: list[str], space: list[Dimension], params: dict[str, Any], number: int) -> list[str]:
        folder = f"hydra.sweep.subdir='{trial_folder(number)}'"
        return [*fixed, *(d.override(params[d.key]) for d in space), *TRIAL_OVERRIDES, folder]

    def _tell(self, study, sweep_dir: Path, number: int) -> None:
        """Tell the study what trial `number` scored: its MDN's validation NLL when its run ended ok;
        a failed run (error.txt) or one whose status is not ok is a failed trial. What the trial took
        and why it failed stay in its folder (the summary reads them there)."""
        from optuna.trial import TrialState

        folder = sweep_dir / trial_folder(number)
        value, reason = None, ""
        try:
            metrics = files.read_json(folder / "metrics.json")
        except (RunFolderError, UserError, OSError):
            metrics = {}
            reason = "no metrics.json (see error.txt)"
        val_nll, status = metrics.get("val_nll"), metrics.get("status")
        if metrics and status != "ok":
            reason = f"status {status}: {metrics.get('status_reason', '')}"
        elif metrics and isinstance(val_nll, float):
            value = val_nll
        elif metrics:
            reason = "metrics.json holds no val_nll"
        if value is None:
            study.tell(number, state=TrialState.FAIL)
            log.warning("search: trial %d failed: %s", number, reason)
        else:
            study.tell(number, value)
            log.info("search: trial %d: validation NLL %.4f", number, value)

    def _write_best(self, sweep_dir: Path, fixed: list[str], best, best_overrides: list[str]) -> None:
        """best.yaml: the best trial's settings, its validation NLL, and the mdn-run line that runs
        them (the command line's settings less the search preset, plus the preset's experiment)."""
        choices = OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {}
        line = [o for o in fixed if not o.startswith("hparams_search=")]
        experiment = choices.get("experiment")
        if experiment not in (None, "null") and not any(o.startswith("experiment=") for o in line):
            line.insert(0, f"experiment={experiment}")
        command = " ".join(["mdn-run", *(shlex.quote(o) for o in [*line, *best_overrides])])
        record = {
            "search": str(sweep_dir),
            "trial": best.number,
            "val_nll": best.value,
            "settings": {o.split("=", 1)[0]: o.split("=", 1)[1] for o in best_overrides},
            "overrides": [*line, *best_overrides],
            "command": command,
        }
        import yaml

        files.write_text(
            sweep_dir / BEST_FILE,
            "# the best trial of the search (lowest validation NLL); `command` runs its settings once more\n"
            + yaml.safe_dump(record, sort_keys=False, width=1000),
        )
        print(f"[mdn-run] search: best trial {best.number} (validation NLL {best.value:.4f}): {command}", flush=True)
