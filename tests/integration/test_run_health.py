"""Component health, data-driven initialisation and revival of dead components."""

import csv
import json

import torch

from helpers import TINY, compose_config, forced_dead_network, toy_data
from mdn_experiments.config import TrainSettings
from mdn_experiments.run.runner import run_experiment
from mdn_experiments.train.trainer import ReviveDead, Trainer


def test_revival_state_survives_a_resume():
    """Dead-epoch counters live in the training state: stopping after epoch 1 and resuming gives
    the same revivals and weights as training straight through."""
    train, val = toy_data(400, 0), toy_data(200, 1)

    def trainer(epochs):
        net = forced_dead_network()
        net.fit_standardization(*train)
        return Trainer(net, train, val, TrainSettings(epochs=epochs, lr=3e-3), epoch_hooks=[ReviveDead(after=2)])

    straight = trainer(4)
    straight.run()
    first = trainer(1)
    first.run()
    second = trainer(4)
    state = first.state_dict()
    state["progress"]["finished"] = False
    second.load_state_dict(state)
    second.run()
    assert straight.progress.revivals  # there was something to carry over
    assert second.progress.revivals == straight.progress.revivals
    for a, b in zip(second.network.state_dict().values(), straight.network.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_a_run_logs_health_and_revivals_in_its_files(tmp_path):
    cfg = compose_config(
        TINY
        + [
            "K=5",
            "trainer.epochs=4",
            "trainer.revive_dead=true",
            "trainer.revive_after=1",
            "model.init=gmm",
            "baseline=false",
        ]
    )
    metrics = run_experiment(cfg, tmp_path)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    for key in [
        "effective_components",
        "dead_components",
        "responsibility_entropy",
        "sigma_floor_share",
        "revived",
        "seconds",
    ]:
        assert key in rows[0], key
    for key in ["effective_components", "dead_components", "responsibility_entropy", "revivals"]:
        assert key in metrics
    assert 1 <= metrics["effective_components"] <= 5
    assert metrics["revivals"] == sum(int(r["revived"]) for r in rows)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert (tmp_path / "figures" / "health.png").stat().st_size > 5000
