"""Ensembles (model.members): M MDNs side by side in one module. Checked against M separate
networks built from the same weights: each member's components are exactly that network's
mixture, the ensemble's density is the mean of the members' densities, the training objective is
the mean of the members' own NLLs, and no member's weights reach another member's outputs."""

from __future__ import annotations

import math

import pytest
import torch

from mdn_experiments.models import MLP, build_network


def ensemble(members=3, K=2, covariance="diag", seed=0):
    torch.manual_seed(seed)
    return build_network(MLP([3], [8, 5], "tanh", members=members), (3,), 2, "mdn", K, covariance=covariance)


def member(net, m: int, K: int):
    """Member m of an ensemble as a network of its own, from the ensemble's weights."""
    M = net.head.members
    single = build_network(MLP([3], [8, 5], "tanh"), (3,), 2, "mdn", K, covariance=net.head.covariance)
    layers = [module for module in net.backbone.net if isinstance(module, torch.nn.Linear)]
    own = [module for module in single.backbone.net if isinstance(module, torch.nn.Linear)]
    with torch.no_grad():
        for i, (big, small) in enumerate(zip(layers, own)):
            out = slice(m * small.out_features, (m + 1) * small.out_features)
            cols = slice(None) if i == 0 else slice(m * small.in_features, (m + 1) * small.in_features)
            small.weight.copy_(big.weight[out, cols])
            small.bias.copy_(big.bias[out])
        rows_of = net.head.mixture_type.component_rows
        width = net.head.linear.in_features // M
        for k in range(K):
            big_rows = sum(rows_of(m * K + k, M * K, 2), [])
            small_rows = sum(rows_of(k, K, 2), [])
            single.head.linear.weight[small_rows] = net.head.linear.weight[big_rows, m * width : (m + 1) * width]
            single.head.linear.bias[small_rows] = net.head.linear.bias[big_rows]
    return single


@pytest.mark.parametrize("covariance", ["diag", "isotropic", "full"])
def test_each_member_is_a_network_of_its_own_and_the_ensemble_their_mean_density(covariance):
    M, K = 3, 2
    net = ensemble(M, K, covariance)
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    with torch.no_grad():
        mixture = net(x)
        singles = [member(net, m, K)(x) for m in range(M)]
    assert mixture.n_components == M * K
    torch.testing.assert_close(mixture.pi.sum(-1), torch.ones(20))
    for m, single in enumerate(singles):
        part = slice(m * K, (m + 1) * K)
        torch.testing.assert_close(mixture.mu[:, part], single.mu)
        torch.testing.assert_close(mixture.pi[:, part] * M, single.pi)
        torch.testing.assert_close(mixture.component_covariance()[:, part], single.component_covariance())
    members = torch.stack([s.log_prob(y) for s in singles])  # (M, N)
    torch.testing.assert_close(mixture.log_prob(y), torch.logsumexp(members, 0) - math.log(M))
    # the objective: eval mode scores the ensemble's mixture, train mode each member on its own
    net.eval()
    torch.testing.assert_close(net.loss(x, y)[0], -mixture.log_prob(y).mean())
    net.train()
    torch.testing.assert_close(net.loss(x, y)[0], -members.mean())


def test_no_member_reaches_another_members_outputs():
    M, K = 3, 2
    net = ensemble(M, K)
    x = torch.randn(7, 3)
    x.requires_grad_(False)
    out = net(x)
    # member 0's components depend on no weight of member 1: its gradient there is exactly zero
    out.mu[:, :K].sum().backward(retain_graph=True)
    first = [module for module in net.backbone.net if isinstance(module, torch.nn.Linear)][0]
    width = first.out_features // M
    assert first.weight.grad[:width].abs().sum() > 0
    assert first.weight.grad[width:].abs().sum() == 0
    assert net.head.linear.weight.grad[:, net.head.linear.in_features // M :].abs().sum() == 0


def test_an_ensemble_trains_and_beats_its_first_member_alone():
    from mdn_experiments.train.trainer import fit

    torch.manual_seed(0)
    x = torch.rand(400, 3) * 2 - 1
    y = torch.stack([torch.sin(3 * x[:, 0]), x[:, 1] * x[:, 2]], -1) + 0.1 * torch.randn(400, 2)
    net = ensemble(4, 2, seed=1)
    net.fit_standardization(x, y)
    fit(net, (x[:300], y[:300]), (x[300:], y[300:]), lr=1e-2, epochs=60, batch_size=64, seed=0)
    with torch.no_grad():
        whole = net(x[300:]).log_prob(y[300:]).mean()
        alone = member(net, 0, 2)
        for name in ("x_mean", "x_std", "y_mean", "y_std"):  # the same standardisation
            getattr(alone, name).copy_(getattr(net, name))
        first = alone(x[300:]).log_prob(y[300:]).mean()
    assert whole > first  # the mixture of members is a better density than one of them


def test_members_need_the_mlp_and_stay_out_of_the_mse_network():
    from helpers import compose_config
    from mdn_experiments.errors import ConfigError
    from mdn_experiments.run.build import build, make_dataset

    cfg = compose_config(["model.members=3", "dataset.n_train=20", "dataset.n_val=5", "dataset.n_test=5"])
    dataset = make_dataset(cfg)
    assert build(cfg, dataset, "mdn").head.n_components == 3 * cfg.K
    assert build(cfg, dataset, "mse").backbone.members == 1
    cnn = compose_config(["dataset=mnist", "model.members=2"])
    with pytest.raises(ConfigError, match=r"model.members must be 1 with CNN \(ensembles need the MLP backbone\)"):
        build(cnn, make_dataset(compose_config(["dataset=inverse_sine"])), "mdn")
