"""Every config option composes and builds; every bad input is refused in one clear line."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from helpers import cli_in_process, compose_config
from mdn_experiments.cli import config_dir
from mdn_experiments.config import validate
from mdn_experiments.config.compose import composition_error
from mdn_experiments.errors import ConfigError, UserError
from mdn_experiments.run.build import build


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


BAD_INPUTS = [
    # (override, what the single error line must mention)
    ("K=0", ["K=0", "K must be an integer from 1 to"]),
    ("K=-1", ["K=-1", "from 1 to"]),
    ("K=three", ["K", "three", "integer"]),
    ("dataset=nope", ["dataset=nope", "inverse_sine"]),
    ("trainer.lr=-1", ["trainer.lr", "> 0"]),
    ("model.sigma_min=0", ["model.sigma_min", "> 0"]),
    ("model.covariance=spherical", ["model.covariance", "diag, isotropic, full"]),
    ("model.init=kmeans", ["model.init", "default", "gmm"]),
    ("model.mu_init=quantiles", ["model.mu_init", "unknown config key"]),
    ("trainer.revive_after=0", ["trainer.revive_after", ">= 1"]),
    ("trainer.lrr=0.1", ["trainer.lrr", "unknown config key"]),
    ("trainr.lr=0.1", ["trainr", "unknown config key"]),
    ("dataset.direction=sideways", ["dataset.direction", "inverse or forward"]),
    ("dataset.n_train=lots", ["dataset.n_train", "integer"]),
    ("trainer.threads=-1", ["trainer.threads", "from 1 to 1024"]),
    ("trainer.random_shift=1", ["trainer.random_shift=1", "moves images", "shape (1,)"]),  # the toy: no images
    ("trainer.random_shift=9", ["trainer.random_shift=9", "from 0 (off) to 8"]),
    ("trainer.ema=1", ["trainer.ema=1", "in (0, 1)"]),
    ("trainer.precision=fast", ["trainer.precision", "float32, bf16, auto"]),
    # non-finite numbers, in any float key
    ("trainer.lr=nan", ["trainer.lr=nan", "finite number"]),
    ("model.sigma_min=inf", ["model.sigma_min=inf", "finite number"]),
    ("dataset.noise=-inf", ["dataset.noise=-inf", "finite number"]),
    ("trainer.grad_clip=nan", ["trainer.grad_clip=nan", "finite number"]),
    # an optimizer or backbone that is not a {_target_: ...} node, or names no such class
    ("trainer.optimizer=adam", ["trainer.optimizer='adam'", "trainer.optimizer._target_=torch.optim.Adam"]),
    ("trainer.optimizer=null", ["trainer.optimizer=None", "torch.optim"]),
    (
        "trainer.optimizer._target_=torch.optim.Adamm",
        ["trainer.optimizer._target_='torch.optim.Adamm'", "one of torch.optim.Adam"],
    ),
    ("trainer.optimizer._target_=torch.nn.Linear", ["torch.nn.Linear", "one of torch.optim.Adam, torch.optim.AdamW"]),
    ("trainer.optimizer._partial_=false", ["trainer.optimizer._partial_=False", "true"]),
    ("model.backbone=mlp", ["model.backbone='mlp'", "model.backbone._target_="]),
    ("model.backbone._target_=abc", ["model.backbone._target_='abc'", "one of mdn_experiments.models.MLP"]),
    ("model.backbone.hidden=5", ["model.backbone.hidden=5", "a list of integers >= 1"]),
    ("model.backbone.activation=swish", ["model.backbone.activation='swish'", "gelu, relu, silu, tanh"]),
    # keys that exist nowhere, or would be silently overridden
    ("+trainer.optimizer.lr=0.1", ["trainer.optimizer.lr", "trainer.lr sets it"]),
    ("+trainer.optimizer.betaz=1", ["trainer.optimizer.betaz", "one of the arguments of Adam", "betas"]),
    ("+model.backbone.hiden=[3]", ["model.backbone.hiden", "one of the arguments of MLP: hidden, activation"]),
    # a device this machine does not have (none of the test machines has CUDA or MPS)
    ("trainer.device=cuda", ["trainer.device='cuda'", "a device this machine has", "cpu"]),
    ("trainer.device=cuda:7", ["trainer.device='cuda:7'", "a device this machine has"]),
    ("trainer.device=tpu", ["trainer.device='tpu'", "auto, cpu, cuda, cuda:N or mps"]),
    # the new trainer keys
    ("trainer.on_nonfinite=ignore", ["trainer.on_nonfinite='ignore'", "rollback, stop"]),
    ("trainer.checkpoint_seconds=-1", ["trainer.checkpoint_seconds", ">= 0"]),
    ("trainer.rollback_lr_factor=2", ["trainer.rollback_lr_factor", "(0, 1]"]),
]


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
def test_every_option_composes_and_instantiates(dataset, model, trainer, request):
    needs = {  # the data sets that read a file: the session's small table, the UCI suite
        "table": lambda: [
            f"dataset.path={request.getfixturevalue('table_csv')}",
            "dataset.target=y1",
            "dataset.features=[a,b]",
        ],
        "uci": lambda: [f"dataset.root={request.getfixturevalue('uci_root')}"],
    }
    extra = needs[dataset]() if dataset in needs else []
    cfg = compose_config([f"dataset={dataset}", f"model={model}", f"trainer={trainer}", *extra])
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
    [
        ("K=0", "K"),
        ("K=-1", "K"),
        ("trainer.lr=-1", "trainer.lr"),
        ("model.sigma_min=0", "model.sigma_min"),
        ("trainer.epochs=0", "trainer.epochs"),
    ],
)
def test_validate_names_the_key_and_the_allowed_range(override, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_config([override]))
    assert err.value.key == key
    assert "must be" in str(err.value)


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("model.sigma_transform=square", "[softplus, exp]"),
        ("trainer.lr_schedule=linear", "[constant, cosine]"),
        ("model.covariance=fulll", "[diag, isotropic, full]"),
        ("model.init=zeros", "[default, quantiles, gmm]"),
    ],
)
def test_a_choice_is_an_enum_that_hydra_refuses_itself(override, allowed):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as caught:
        compose_config([override])
    assert f"expected one of {allowed}" in str(caught.value.__cause__)


@pytest.mark.parametrize("override, needles", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_nonzero_exit_and_no_training(override, needles, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli_in_process([override, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mdn-run: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (run_dir / "history.csv").exists()  # no training started


def test_folders_that_are_files_are_one_line_errors(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = [
        ([f"hydra.run.dir={a_file}/run"], "hydra.run.dir=", "cannot be created"),
        (["-m", "K=1,2", f"hydra.sweep.dir={a_file}/sweep"], "hydra.sweep.dir=", "cannot be created"),
        (
            ["dataset=mnist", f"dataset.root={a_file}", f"hydra.run.dir={tmp_path / 'run'}"],
            f"dataset.root='{a_file}' is not a folder",
            "must be a folder",
        ),
    ]
    for args, *needles in cases:
        proc = cli_in_process(args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mdn-run: error: "), proc.stderr
        assert all(needle in lines[0] for needle in needles), lines[0]
        assert "Traceback" not in proc.stderr + proc.stdout


def test_one_line_condenses_hydra_messages():
    message = (
        "Could not override 'trainer.foo'.\nTo append to your config use +trainer.foo=1\n"
        "Key 'foo' is not in struct\n    full_key: trainer.foo\n    object_type=dict\n\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    line = composition_error(message)
    assert "\n" not in line and "trainer.foo" in line


def test_help_lists_groups_and_options():
    proc = cli_in_process(["--help"])
    assert proc.returncode == 0
    assert "dataset: inverse_sine" in proc.stdout
    assert "K: 3" in proc.stdout
    assert "mdn-run -m" in proc.stdout


def test_cfg_job_prints_the_composed_config():
    proc = cli_in_process(["--cfg", "job", "K=5", "trainer.lr=3e-3", "seed=1"])
    assert proc.returncode == 0, proc.stderr
    assert "K: 5" in proc.stdout and "seed: 1" in proc.stdout and "lr: 0.003" in proc.stdout
