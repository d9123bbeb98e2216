"""The two-link arm: kinematics against each other, the metrics against oracles, a tiny run."""

import numpy as np
import torch

from mdn_experiments.datasets.robot_arm import RobotArm
from mdn_experiments.figures.robot_arm import convex_hull
from mdn_experiments.run.figures import workspace_hull


def test_the_hull_encloses_every_reachable_position():
    ds = RobotArm()
    hull = workspace_hull(ds)
    x, _ = ds.sample(20000, torch.Generator().manual_seed(2))
    edges = hull[1:] - hull[:-1]
    rel = x.double().numpy()[:, None, :] - hull[None, :-1, :]
    cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
    # counter-clockwise polygon: every point on the left of every edge (to float32 precision)
    assert (cross >= -1e-6).all()


def test_convex_hull_of_a_square_with_inner_points():
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.8], [0.5, 0]])
    hull = convex_hull(pts)
    assert {tuple(p) for p in hull} == {(0, 0), (1, 0), (1, 1), (0, 1)}
