"""The figures: one module per task (inverse_sine, robot_arm, mnist, table) drawing a trained run, the
figures every run draws (common: losses, health, calibration, the sweep over K), and the shared
style. Each function takes arrays and keyword arguments and writes one PNG; matplotlib is imported
only when something is drawn."""

from __future__ import annotations

from pathlib import Path


def draw_task(dataset, *, mdn_net, baseline, splits, fig_dir: Path) -> list[Path]:
    """The task's own figures of a trained run (by the dataset's class)."""
    from mdn_experiments.datasets.inverse_sine import InverseSine
    from mdn_experiments.datasets.mnist import Mnist
    from mdn_experiments.datasets.robot_arm import RobotArm
    from mdn_experiments.datasets.table import TableDataset
    from mdn_experiments.figures import inverse_sine, mnist, robot_arm, table

    drawers = {InverseSine: inverse_sine.draw, RobotArm: robot_arm.draw, Mnist: mnist.draw}
    draw = table.draw if isinstance(dataset, TableDataset) else drawers.get(type(dataset))
    return draw(dataset=dataset, mdn_net=mdn_net, baseline=baseline, splits=splits, fig_dir=fig_dir) if draw else []
