"""A run folder is data, never code (mdn_experiments.config.safety): tampered run folders, from every file
that holds a config or an override, with several gadgets (Hydra's blocklist names none of them),
make every tool refuse in one line naming the file and the key, and nothing runs: each gadget
would create a marker file, and the tests check that it does not exist."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

from helpers import TINY, run_cli
from mdn_experiments.config import saved_config
from mdn_experiments.config.safety import UnsafeConfig
from mdn_experiments.errors import RunFolderError
from mdn_experiments.run.artifacts import load_run
from mdn_experiments.tools import launch
from mdn_experiments.train.state import read_state, write_state

RUN = [*TINY, "figures=false", "trainer.checkpoint_seconds=0"]


def gadgets(marker: Path) -> dict[str, object]:
    """Config values that would run code (each creates `marker`) if anything instantiated them."""
    return {
        "os.system": {"_target_": "os.system", "_args_": [f"touch {marker}"]},
        "subprocess.call": {"_target_": "subprocess.call", "args": ["touch", str(marker)]},
        "builtins.eval": {"_target_": "builtins.eval", "_args_": [f"open({str(marker)!r}, 'w')"]},
        "pathlib.Path.write_text": [{"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "x"}],
        "oc.decode": f"${{oc.decode:'{{_target_: os.system, _args_: [touch {marker}]}}'}}",
    }


@pytest.fixture(scope="module")
def finished(tiny_run) -> Path:
    """The session's tiny finished run (copied by every test before it is tampered with)."""
    return tiny_run


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory) -> Path:
    """A run killed in its MDN phase: it holds state.pt and .hydra/, no metrics.json."""
    run_dir = tmp_path_factory.mktemp("unfinished") / "run"
    proc = run_cli([*RUN, f"hydra.run.dir={run_dir}"], env={"MDN_FAULT": "KILL@mdn:2:1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (run_dir / "state.pt").exists() and not (run_dir / "metrics.json").exists()
    return run_dir


def copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "shared" / folder.name
    shutil.copytree(folder, target)
    return target


def refused(proc, marker: Path, *needles: str) -> None:
    """Non-zero exit, one error line naming what is wrong, no traceback, and nothing ran."""
    assert proc.returncode == 2, proc.stdout + proc.stderr  # a refusal, never a crash
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the gadget ran"


def tool(module: str, *args) -> object:
    return launch.run(module, [str(a) for a in args], capture_output=True, text=True, timeout=600)


GADGET_NAMES = list(gadgets(Path("m")))


class TestSavedConfigs:
    """model.pt and state.pt: the config inside is checked before anything is built from it."""

    @pytest.mark.parametrize("gadget", GADGET_NAMES)
    @pytest.mark.parametrize("where", ["model.backbone.hidden", "dataset.noise", "trainer.optimizer.betas"])
    def test_model_pt_is_refused_by_load_run(self, finished, tmp_path, gadget, where):
        marker = tmp_path / "ran"
        run_dir = copy(finished, tmp_path)
        checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
        node = checkpoint["config"]
        *parents, leaf = where.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = gadgets(marker)[gadget]
        torch.save(checkpoint, run_dir / "model.pt")
        with pytest.raises(UnsafeConfig) as caught:
            load_run(run_dir)
        assert str(run_dir / "model.pt") in str(caught.value) and where in str(caught.value)
        assert not marker.exists()

    @pytest.mark.parametrize(
        "slot, target",
        [("dataset", "os.system"), ("model.backbone", "subprocess.Popen"), ("trainer.optimizer", "builtins.exec")],
    )
    def test_a_slot_naming_anything_but_the_project_classes_is_refused(self, finished, tmp_path, slot, target):
        run_dir = copy(finished, tmp_path)
        checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
        node = checkpoint["config"]
        for part in slot.split("."):
            node = node[part]
        node["_target_"] = target
        torch.save(checkpoint, run_dir / "model.pt")
        with pytest.raises(UnsafeConfig, match=f"{slot}._target_='{target}' is not allowed: one of"):
            load_run(run_dir)

    @pytest.mark.quick
    def test_mdn_predict_on_a_tampered_model_pt(self, finished, tmp_path):
        marker = tmp_path / "ran"
        run_dir = copy(finished, tmp_path)
        checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
        checkpoint["config"]["model"]["backbone"]["hidden"] = gadgets(marker)["os.system"]
        torch.save(checkpoint, run_dir / "model.pt")
        refused(
            tool("mdn_experiments.tools.predict", run_dir, "--x", "0.5"),
            marker,
            "model.pt",
            "model.backbone.hidden._target_='os.system'",
        )

    @pytest.mark.parametrize("gadget", ["os.system", "builtins.eval", "oc.decode"])
    def test_mdn_resume_on_a_tampered_state_pt(self, unfinished, tmp_path, gadget):
        marker = tmp_path / "ran"
        run_dir = copy(unfinished, tmp_path)
        state = read_state(run_dir)
        state["config"]["model"]["backbone"]["hidden"] = gadgets(marker)[gadget]
        write_state(run_dir, state)  # a tamperer can recompute the checksum: it guards integrity only
        (run_dir / "state.prev.pt").unlink(missing_ok=True)
        refused(tool("mdn_experiments.tools.resume", run_dir), marker, "state.pt", "model.backbone.hidden")

    def test_a_saved_config_with_a_wrong_type_or_an_unknown_key_is_refused(self, finished):
        config = torch.load(finished / "model.pt", weights_only=True)["config"]
        assert saved_config(config, "model.pt").K == config["K"]  # the untouched config loads
        with pytest.raises(RunFolderError, match=r"model.pt: K: Value '3; touch x'"):
            saved_config({**config, "K": "3; touch x"}, "model.pt")
        with pytest.raises(RunFolderError, match="model.pt: trainer.lrr"):
            saved_config({**config, "trainer": {**config["trainer"], "lrr": 1.0}}, "model.pt")

    def test_weights_that_do_not_fit_their_config_are_one_line(self, finished, tmp_path):
        run_dir = copy(finished, tmp_path)
        checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
        checkpoint["config"]["K"] = 5
        torch.save(checkpoint, run_dir / "model.pt")
        with pytest.raises(RunFolderError, match="do not fit the network its config describes"):
            load_run(run_dir)


class TestRecordedOverrides:
    """.hydra/hydra.yaml and multirun.yaml: mdn-resume replays only overrides that build nothing new."""

    def tamper(self, path: Path, *, task: list[str] = (), hydra: list[str] = (), cwd: str | None = None) -> None:
        record = yaml.safe_load(path.read_text())
        record["hydra"]["overrides"]["task"] += list(task)
        record["hydra"]["overrides"]["hydra"] += list(hydra)
        if cwd is not None:
            record["hydra"]["runtime"]["cwd"] = cwd
        path.write_text(yaml.safe_dump(record))

    @pytest.mark.parametrize(
        "override",
        [
            "+model.backbone.hidden={_target_:os.system,_args_:['touch MARK']}",  # nested, in a value
            "trainer.optimizer._target_=builtins.exec",  # a slot, another class
            "+trainer.extra._target_=subprocess.call",  # a key nobody builds
            "dataset={_target_:pathlib.Path.touch,self:MARK}",  # a whole node replaced
        ],
    )
    def test_task_overrides_naming_code_are_refused(self, unfinished, tmp_path, override):
        marker = tmp_path / "ran"
        run_dir = copy(unfinished, tmp_path)
        self.tamper(run_dir / ".hydra" / "hydra.yaml", task=[override.replace("MARK", str(marker))])
        refused(tool("mdn_experiments.tools.resume", run_dir), marker, "hydra.yaml", "is not allowed")

    @pytest.mark.parametrize(
        "override, key",
        [
            ("+hydra.callbacks.evil={_target_:os.system,_args_:['touch MARK']}", "hydra.callbacks.evil._target_"),
            ("hydra.launcher._target_=os.system", "hydra.launcher._target_"),
            ("+hydra.job.env_set.PYTHONPATH=MARK", "hydra.job.env_set.PYTHONPATH"),
            ("hydra.searchpath=[file://MARK]", "hydra.searchpath"),
            ("+hydra.launcher.setup=['touch MARK']", "hydra.launcher.setup"),
            ("hydra/help=../../MARK", "hydra/help"),
        ],
    )
    def test_hydra_overrides_that_could_bring_code_are_refused(self, unfinished, tmp_path, override, key):
        marker = tmp_path / "ran"
        run_dir = copy(unfinished, tmp_path)
        self.tamper(run_dir / ".hydra" / "hydra.yaml", hydra=[override.replace("MARK", str(marker))])
        proc = tool("mdn_experiments.tools.resume", run_dir)
        refused(proc, marker, "hydra.yaml", key)
        assert "resuming the run" not in proc.stdout or "mdn-run" not in proc.stdout.split("resuming the run")[-1]

    def test_the_folder_a_run_was_started_in_cannot_bring_a_module(self, unfinished, tmp_path):
        """runtime.cwd names a folder holding a package called mdn_experiments: the resumed run
        works from there (relative paths) but never imports from it."""
        marker = tmp_path / "ran"
        trap = tmp_path / "trap"
        (trap / "mdn_experiments").mkdir(parents=True)
        (trap / "mdn_experiments" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
        (trap / "hydra").mkdir()
        (trap / "hydra" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
        run_dir = copy(unfinished, tmp_path)
        self.tamper(run_dir / ".hydra" / "hydra.yaml", cwd=str(trap))
        proc = tool("mdn_experiments.tools.resume", run_dir)
        assert proc.returncode == 0, proc.stderr  # the run resumes and finishes...
        assert (run_dir / "metrics.json").exists()
        assert not marker.exists()  # ...with the installed code only

    def test_a_tampered_multirun_yaml_is_refused(self, tmp_path):
        marker = tmp_path / "ran"
        sweep = tmp_path / "sweep"
        proc = run_cli(
            ["-m", "K=1,2", *RUN, f"hydra.sweep.dir={sweep}"], env={"MDN_FAULT": "KILL@mdn:1:1", "MDN_FAULT_RUN": "K=2"}
        )
        assert proc.returncode == -signal.SIGKILL and not (sweep / "sweep_done.json").exists()
        self.tamper(
            sweep / "multirun.yaml", task=[f"+model.backbone.x={{_target_:os.system,_args_:['touch {marker}']}}"]
        )
        refused(tool("mdn_experiments.tools.resume", sweep), marker, "multirun.yaml", "model.backbone.x._target_")

    def test_config_yaml_and_overrides_yaml_are_only_ever_read_as_data(self, tmp_path):
        """The two .hydra files no tool replays: mdn-report reads config.yaml as plain YAML, and a
        gadget in either builds nothing, whatever reads the folder."""
        marker = tmp_path / "ran"
        sweep = tmp_path / "sweep"
        assert run_cli(["-m", "K=2", *RUN, f"hydra.sweep.dir={sweep}"]).returncode == 0
        (job,) = [p for p in sweep.iterdir() if p.is_dir()]
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        config["model"]["backbone"]["hidden"] = gadgets(marker)["os.system"]
        config["trainer"]["optimizer"] = gadgets(marker)["subprocess.call"]
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (job / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"+x={{_target_:os.system,_args_:['touch {marker}']}}"])
        )
        proc = tool("mdn_experiments.tools.report", sweep)
        assert proc.returncode == 0 and "1 jobs summarised" in proc.stdout, proc.stderr
        assert tool("mdn_experiments.tools.predict", job, "--x", "0.5").returncode == 0
        assert tool("mdn_experiments.tools.resume", sweep).returncode == 2  # finished: nothing to resume
        assert not marker.exists()

    def test_a_tampered_tracking_json_is_refused(self, unfinished, tmp_path):
        run_dir = copy(unfinished, tmp_path)
        (run_dir / "tracking.json").write_text(json.dumps({"mlflow_uri": "evil-plugin://x", "mlflow_run_id": "a" * 32}))
        record = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        record["hydra"]["overrides"]["task"].append("logger=mlflow")
        (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(record))
        state = read_state(run_dir)
        state["config"]["logger"] = "mlflow"
        write_state(run_dir, state)
        refused(tool("mdn_experiments.tools.resume", run_dir), tmp_path / "none", "tracking.json", "evil-plugin://x")


class TestCommandLine:
    """The same rule for `_target_` nodes typed on the command line, at any depth, checked before
    Hydra instantiates anything (its callbacks included)."""

    @pytest.mark.parametrize(
        "override",
        [
            "model.backbone.hidden={_target_:os.system,_args_:['touch MARK']}",
            "+hydra.callbacks.evil={_target_:os.system,_args_:['touch MARK']}",
            '+dataset.extra=[1,{_target_:builtins.eval,_args_:[\'open("MARK","w")\']}]',
        ],
    )
    def test_a_gadget_on_the_command_line_is_one_line_and_runs_nothing(self, tmp_path, override):
        marker = tmp_path / "ran"
        proc = run_cli([*RUN, override.replace("MARK", str(marker)), f"hydra.run.dir={tmp_path / 'run'}"])
        refused(proc, marker, "_target_", "is not allowed")
        assert proc.returncode == 2 and not (tmp_path / "run").exists()
