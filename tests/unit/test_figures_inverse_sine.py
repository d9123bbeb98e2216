"""The inverse-sine data and its closed-form conditional density against independent numerics."""

import numpy as np


def test_density_contour_draws_a_flat_density_too(tmp_path):
    from mdn_experiments.figures.inverse_sine import density_contour

    gx, gy = np.linspace(0, 1, 20), np.linspace(0, 1, 15)
    for name, density in (("zeros.png", np.zeros((15, 20))), ("peaked.png", np.outer(np.exp(-gy * 50), np.ones(20)))):
        path = density_contour(
            tmp_path / name,
            x_train=gx,
            y_train=gx,
            grid_x=gx,
            grid_y=gy,
            density=density,
            labels=("x", "t"),
            title=name,
        )
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
