"""figures.style.save: the PNG it writes is the one matplotlib's own tight_layout + savefig writes."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mdn_experiments.figures import style  # noqa: E402
from mdn_experiments.figures.style import plt  # noqa: E402


def _figure():
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax in axes:
        style.scatter_data(ax, rng.normal(size=300), rng.normal(size=300))
        ax.plot([-2, 2], [-1, 1], label="a line")
        ax.set_title("a title long enough to need room")
        ax.set_xlabel("x")
        ax.legend()
    return fig


def test_save_writes_the_bytes_of_a_plain_tight_layout_savefig(tmp_path):
    plain = _figure()
    plain.tight_layout()
    assert plain.get_layout_engine() is not None  # the placeholder save() drops
    plain.savefig(tmp_path / "plain.png", dpi=style.DPI, format="png")
    plt.close(plain)

    fig = _figure()
    style.save(fig, tmp_path / "fast.png")

    assert (tmp_path / "fast.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    assert not plt.fignum_exists(fig.number)  # closed
