"""Every config option composes and builds; every bad input is refused in one clear line."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mdn_experiments.cli import config_dir, one_line
from mdn_experiments.config import validate
from mdn_experiments.errors import ConfigError, UserError
from mdn_experiments.experiment import build

from helpers import compose_config, run_cli


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def test_the_config_tree_has_the_expected_options():
    assert "inverse_sine" in options("dataset")
    assert {"mlp", "inverse_sine"} <= set(options("model"))
    assert {"default", "inverse_sine"} <= set(options("trainer"))


def test_defaults_are_the_paper_toy_problem():
    cfg = compose_config()
    assert cfg.K == 3 and cfg.seed == 0 and cfg.baseline is True
    assert cfg.dataset.name == "inverse_sine" and cfg.dataset.n_train == 1000
    assert cfg.dataset.direction == "inverse"


@pytest.mark.parametrize("dataset", options("dataset"))
@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_option_composes_and_instantiates(dataset, model, trainer):
    cfg = compose_config([f"dataset={dataset}", f"model={model}", f"trainer={trainer}"])
    validate(cfg)
    ds = instantiate(cfg.dataset)
    if cfg.model.backbone._target_.endswith("CNN") and len(ds.input_shape) != 3:
        with pytest.raises(UserError, match="a CNN needs image inputs"):
            build(cfg, ds, "mdn")
        return
    for head in ("mdn", "mse"):
        net = build(cfg, ds, head)
        x = torch.zeros(4, *ds.input_shape)
        out = net(x)
        assert (out.mu if head == "mdn" else out).shape[-1] == ds.output_dim
    optimizer = instantiate(cfg.trainer.optimizer)(net.parameters(), lr=cfg.trainer.lr)
    assert isinstance(optimizer, torch.optim.Optimizer)


def test_model_and_trainer_follow_the_dataset_unless_overridden():
    cfg = compose_config(["model=mlp"])
    assert list(cfg.model.backbone.hidden) == [20]  # the plain MLP: Bishop's 20 tanh units
    assert list(compose_config().model.backbone.hidden) == [64, 64]


@pytest.mark.parametrize(
    "override, key",
    [("K=0", "K"), ("K=-1", "K"), ("trainer.lr=-1", "trainer.lr"), ("model.sigma_min=0", "model.sigma_min"),
     ("trainer.epochs=0", "trainer.epochs"), ("model.sigma_transform=square", "model.sigma_transform"),
     ("trainer.lr_schedule=linear", "trainer.lr_schedule")],
)
def test_validate_names_the_key_and_the_allowed_range(override, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_config([override]))
    assert err.value.key == key
    assert "must be" in str(err.value)


BAD_INPUTS = [
    # (override, what the single error line must mention)
    ("K=0", ["K=0", "K must be an integer >= 1"]),
    ("K=-1", ["K=-1", ">= 1"]),
    ("K=three", ["K", "three", "integer"]),
    ("dataset=nope", ["dataset=nope", "inverse_sine"]),
    ("trainer.lr=-1", ["trainer.lr", "> 0"]),
    ("model.sigma_min=0", ["model.sigma_min", "> 0"]),
    ("trainer.lrr=0.1", ["trainer.lrr", "unknown config key"]),
    ("trainr.lr=0.1", ["trainr", "unknown config key"]),
    ("dataset.direction=sideways", ["dataset.direction", "inverse or forward"]),
    ("dataset.n_train=lots", ["dataset.n_train", "integer"]),
    ("trainer.threads=-1", ["trainer.threads", ">= 1"]),
]


@pytest.mark.parametrize("override, needles", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_nonzero_exit_and_no_training(override, needles, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([override, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mdn-run: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (run_dir / "history.csv").exists()  # no training started


def test_one_line_condenses_hydra_messages():
    message = ("Could not override 'trainer.foo'.\nTo append to your config use +trainer.foo=1\n"
               "Key 'foo' is not in struct\n    full_key: trainer.foo\n    object_type=dict\n\n"
               "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n")
    line = one_line(message)
    assert "\n" not in line and "trainer.foo" in line


def test_help_lists_groups_and_options():
    proc = run_cli(["--help"])
    assert proc.returncode == 0
    assert "dataset: inverse_sine" in proc.stdout
    assert "K: 3" in proc.stdout
    assert "mdn-run -m" in proc.stdout


def test_cfg_job_prints_the_composed_config():
    proc = run_cli(["--cfg", "job", "K=5", "trainer.lr=3e-3", "seed=1"])
    assert proc.returncode == 0, proc.stderr
    assert "K: 5" in proc.stdout and "seed: 1" in proc.stdout and "lr: 0.003" in proc.stdout
