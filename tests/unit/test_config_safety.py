"""A run folder is data, never code (mdn_experiments.config.safety): tampered run folders, from every file
that holds a config or an override, with several gadgets (Hydra's blocklist names none of them),
make every tool refuse in one line naming the file and the key, and nothing runs: each gadget
would create a marker file, and the tests check that it does not exist."""

from __future__ import annotations

import pytest

from mdn_experiments.config.safety import UnsafeConfig, check_overrides, check_targets, quote


class TestCommandLine:
    """The same rule for `_target_` nodes typed on the command line, at any depth, checked before
    Hydra instantiates anything (its callbacks included)."""

    @pytest.mark.parametrize(
        "overrides, needle",
        [
            (["a.b.c={_target_:os.system}"], "a.b.c._target_='os.system'"),
            (
                ["K=1,2", "trainer.optimizer=choice({_target_:torch.optim.SGD,_partial_:true},{_target_:os.system})"],
                "trainer.optimizer._target_='os.system'",
            ),
            (["trainer.optimizer._args_=[1]"], "trainer.optimizer._args_"),
            (["dataset._partial_=true"], "dataset._partial_"),
            (["+hydra.sweeper._target_=os.system"], "hydra.sweeper._target_"),
        ],
    )
    def test_check_overrides_refuses_targets_at_any_depth(self, overrides, needle):
        with pytest.raises(UnsafeConfig, match=needle.replace("(", r"\(").replace("[", r"\[")):
            check_overrides(overrides, "", replay=False)

    def test_the_project_targets_and_sweeps_pass(self):
        check_overrides(
            [
                "trainer.optimizer._target_=torch.optim.SGD",
                "model.backbone._target_=mdn_experiments.models.CNN",
                "K=1,2,3",
                "dataset=robot_arm",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                "hydra.sweep.dir='/tmp/a/K=3,seed=0'",
            ],
            "x",
            replay=True,
        )

    def test_replayed_hydra_settings_are_limited(self):
        check_overrides(["+hydra.job.env_set.X=1"], "", replay=False)  # the user's own command line
        with pytest.raises(UnsafeConfig, match="hydra.job.env_set.X"):
            check_overrides(["+hydra.job.env_set.X=1"], "f.yaml", replay=True)


def test_check_targets_walks_lists_and_mappings():
    check_targets(
        {
            "dataset": {"_target_": "mdn_experiments.datasets.robot_arm.RobotArm"},
            "trainer": {"optimizer": {"_target_": "torch.optim.LBFGS", "_partial_": True}},
        }
    )
    with pytest.raises(UnsafeConfig, match=r"model.backbone.hidden\[1\]\[0\]._target_"):
        check_targets({"model": {"backbone": {"hidden": [1, [{"_target_": "os.system"}]]}}})
    with pytest.raises(UnsafeConfig, match="interpolation"):
        check_targets({"a": "${oc.env:HOME}"}, "f", saved=True)
    check_targets({"a": "${oc.env:HOME}"}, "command line")  # a composed config may interpolate


@pytest.mark.parametrize(
    "path", ["/tmp/a/K=3,seed=0", "/tmp/é ü/x", "/tmp/it's", "a\\", "x${y}", "a\\'b", "$x", "日本/語", "\\", "''"]
)
def test_quote_makes_any_path_one_hydra_value(path):
    from omegaconf import OmegaConf

    (override,) = check_overrides([f"hydra.run.dir={quote(path)}"], "", replay=True)
    assert OmegaConf.create({"d": override.value()}).d == path


class TestReplayedLaunchers:
    """What a folder may replay of a launcher: how jobs are scheduled, never a path or a shell line."""

    @pytest.mark.parametrize(
        "override",
        [
            "+hydra.launcher.submitit_folder=/tmp/x",
            "+hydra.launcher.temp_folder=/tmp/x",
            "+hydra.launcher.additional_parameters.x=1",
            "hydra/launcher=submitit_local",
        ],
    )
    def test_refused(self, override):
        with pytest.raises(UnsafeConfig, match="hydra"):
            check_overrides([override], "multirun.yaml", replay=True)
        check_overrides([override], "", replay=False)  # typed by the user: the composed config is checked

    @pytest.mark.parametrize(
        "override",
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra/launcher=slurm", "hydra.launcher.mem_gb=8"],
    )
    def test_allowed(self, override):
        check_overrides([override], "multirun.yaml", replay=True)
