"""A few bad inputs through the real `mdn-run` console entry, in a fresh interpreter, as a user
meets them (the whole table of bad inputs is checked in-process by tests/unit/test_config.py)."""

import pytest

from helpers import run_cli
from mdn_experiments.config.compose import config_dir
from mdn_experiments.errors import UserError


@pytest.mark.quick
@pytest.mark.parametrize(
    "override, needle",
    [
        ("K=0", "K=0 is not allowed: K must be an integer from 1 to 1000000"),
        ("dataset=nope", "dataset=nope: no such option; dataset must be one of: inverse_sine, mnist, robot_arm"),
        ("model.covariance=fulll", "model.covariance='fulll' is not allowed: model.covariance must be one of diag"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(override, needle, tmp_path):
    proc = run_cli([override, f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"mdn-run: error: {proc.stderr.split('mdn-run: error: ')[1].strip()}"]
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.quick
@pytest.mark.parametrize(
    "values, needle",
    [
        ("seed=0,x", "seed='x' is not allowed: seed must be an integer"),
        ("K=1,abc", "K='abc' is not allowed: K must be an integer"),
    ],
)
def test_a_bad_value_in_a_sweep_list_is_one_line_and_exit_2(values, needle, tmp_path):
    """A value of a sweep's list that its key refuses is found when Hydra checks the sweep's
    first jobs, after the multirun has started: still one line, exit 2, and no job folder."""
    proc = run_cli(["-m", values, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"mdn-run: error: {proc.stderr.split('mdn-run: error: ')[1].strip()}"]
    assert needle in proc.stderr
    assert not [p for p in (tmp_path / "sweep").glob("*") if p.is_dir()]


def test_every_key_refuses_bad_values_as_user_errors():
    """Walk every key of every dataset's config with wrong values: each one either fails at
    composition (Hydra's type check, one line in the CLI) or in the checks made before training,
    as a UserError (one line in the CLI); never with another exception."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mdn_experiments.config import guard
    from mdn_experiments.run.build import check_config

    guard.install()  # as mdn-run composes (installed for good by any earlier compose in this process)
    checked, refused, seen = 0, 0, set()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for dataset in ("inverse_sine", "robot_arm", "mnist"):
            base = OmegaConf.to_container(compose("config", overrides=[f"dataset={dataset}"]))
            for key, _ in leaves(base):
                if key in seen and not key.startswith("dataset."):
                    continue  # trainer.* and model.* keys shared with an earlier dataset
                seen.add(key)
                for bad in ("nan", "-1", "abc", "[]", "null", "[1,2,3]"):
                    try:
                        cfg = compose("config", overrides=[f"dataset={dataset}", f"{key}={bad}"])
                    except (HydraException, OmegaConfBaseException):
                        continue
                    except guard.Refused as refusal:  # the composed config's own check: one line in the CLI
                        assert isinstance(refusal.error, UserError)
                        refused += 1
                        continue
                    try:
                        dataset_obj, _ = check_config(cfg)
                        if dataset != "mnist":
                            dataset_obj.load(0)  # generated data: cheap, and it must not fail either
                    except UserError:
                        pass
                    checked += 1
    assert checked > 150 and refused > 20, (checked, refused)  # 151 and 27 when written


def leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
