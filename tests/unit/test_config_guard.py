"""mdn_experiments.config.guard: every composed config is checked before Hydra builds anything from it
(logging handlers, callbacks), so a callback or a logging config arriving in a config file from
another folder never runs, and the one-line refusal is true. Each gadget would create a marker file;
the tests check that it does not exist, and that no run folder was made."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cli_in_process
from mdn_experiments.config.compose import compose
from mdn_experiments.config.guard import LOGGING_HANDLERS, check_logging
from mdn_experiments.config.safety import UnsafeConfig
from mdn_experiments.errors import ConfigError, UserError


def preset_folder(tmp_path: Path, marker: Path) -> Path:
    """A config folder holding an experiment preset that brings a callback (and nothing else)."""
    folder = tmp_path / "elsewhere"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "evil.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n"
        "  callbacks:\n"
        "    evil:\n"
        "      _target_: pathlib.Path.touch\n"
        f"      self: {marker}\n"
    )
    return folder


def refused(proc, marker: Path, run_dir: Path, *needles: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mdn-run: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not marker.exists(), "the gadget ran"
    assert not run_dir.exists(), "a folder was made"
    return errors[0]


class TestCallbacksFromConfigFiles:
    @pytest.mark.parametrize("how", ["searchpath", "config-dir"])
    def test_a_callback_from_a_preset_in_another_folder_never_runs(self, tmp_path, how):
        marker, run_dir = tmp_path / "ran", tmp_path / "run"
        folder = preset_folder(tmp_path, marker)
        where = [f"hydra.searchpath=[file://{folder}]"] if how == "searchpath" else ["--config-dir", str(folder)]
        proc = cli_in_process([*where, "experiment=evil", f"hydra.run.dir={run_dir}"])
        refused(proc, marker, run_dir, "mdn-run composes only its own config tree")

    def test_a_callback_given_on_the_command_line_never_runs(self, tmp_path):
        marker, run_dir = tmp_path / "ran", tmp_path / "run"
        proc = cli_in_process(
            [f"+hydra.callbacks.evil={{_target_: pathlib.Path.touch, self: {marker}}}", f"hydra.run.dir={run_dir}"]
        )
        refused(proc, marker, run_dir, "hydra.callbacks.evil._target_='pathlib.Path.touch' is not allowed")

    def test_the_projects_own_config_passes(self):
        cfg = compose(["hydra/launcher=joblib"], return_hydra_config=True)
        assert set(cfg.hydra.callbacks) == {"release_stderr", "summary"}


class TestLogging:
    @pytest.mark.parametrize(
        "override, needle",
        [
            ("hydra.job_logging.handlers.file.filename=/tmp/outside.log", "a log file in the run's folder"),
            ("+hydra.job_logging.handlers.x={class: os.remove, path: /tmp/x}", "one of logging.StreamHandler"),
            (
                "+hydra.job_logging.handlers.x={class: logging.handlers.SocketHandler, host: localhost, port: 9}",
                "hydra.job_logging.handlers.x.class",
            ),
            ("hydra.job_logging.handlers.console.stream=ext://os.system", "one of the streams"),
            ("hydra/hydra_logging=hydra_debug", "hydra.hydra_logging.handlers.file.filename"),
        ],
    )
    def test_a_logging_config_that_builds_or_writes_elsewhere_is_one_line_and_no_folder(
        self, tmp_path, override, needle
    ):
        run_dir = tmp_path / "run"
        refused(cli_in_process([override, f"hydra.run.dir={run_dir}"]), tmp_path / "none", run_dir, needle)

    def test_a_factory_anywhere_is_refused(self):
        with pytest.raises(UnsafeConfig, match=r"hydra.job_logging.formatters.f.\(\)"):
            check_logging({"version": 1, "formatters": {"f": {"()": "os.getcwd"}}}, "hydra.job_logging")

    @pytest.mark.parametrize("choice", ["default", "stdout", "disabled", "none"])
    def test_hydras_own_logging_configs_pass(self, choice):
        cfg = compose([f"hydra/job_logging={choice}"], return_hydra_config=True)
        assert cfg.hydra.job_logging is None or set(
            handler["class"] for handler in (cfg.hydra.job_logging.get("handlers") or {}).values()
        ) <= set(LOGGING_HANDLERS)


class TestLaunchersAndFolders:
    @pytest.mark.parametrize(
        "overrides, needle",
        [
            (["hydra/launcher=joblib", "hydra.launcher.n_jobs=1000"], "hydra.launcher.n_jobs=1000 is not allowed"),
            (["hydra/launcher=submitit_local", "hydra.launcher.nodes=8"], "hydra.launcher.nodes=8 is not allowed"),
            (["hydra/launcher=slurm", "hydra.launcher.array_parallelism=0"], "hydra.launcher.array_parallelism"),
        ],
    )
    def test_how_many_processes_start_is_bounded(self, overrides, needle):
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            compose(overrides, return_hydra_config=True)

    def test_one_job_per_core_is_allowed(self):
        assert compose(["hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"], return_hydra_config=True)

    @pytest.mark.parametrize("key", ["hydra.sweep.subdir=../escape", "hydra.sweep.subdir=/tmp/escape"])
    def test_a_job_folder_outside_the_sweep_is_refused_before_hydra_writes(self, tmp_path, key):
        sweep = tmp_path / "sweep"
        proc = cli_in_process(["-m", "K=1,2", key, f"hydra.sweep.dir={sweep}"])
        refused(proc, tmp_path / "none", sweep, "a relative folder inside the sweep's folder")
        assert not (tmp_path / "escape").exists()

    def test_hydras_files_stay_in_the_run_folder(self, tmp_path):
        run_dir = tmp_path / "run"
        proc = cli_in_process(["hydra.output_subdir=../../hydra-files", f"hydra.run.dir={run_dir}"])
        refused(proc, tmp_path / "none", run_dir, "a relative folder inside the job's folder")

    def test_a_path_holding_an_interpolation_is_one_line_and_no_folder(self, tmp_path):
        run_dir = tmp_path / "run"
        proc = cli_in_process(
            ["dataset=table", "dataset.path=/data/${x}.csv", "dataset.target=y", f"hydra.run.dir={run_dir}"]
        )
        refused(proc, tmp_path / "none", run_dir, "dataset.path", "a path holding '${' cannot be used")

    def test_compose_raises_the_one_line_error(self):
        with pytest.raises(UserError, match="hydra.searchpath"):
            compose(["hydra.searchpath=[file:///tmp]"], return_hydra_config=True)
