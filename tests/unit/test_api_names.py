"""The Python API: the package exports every name it advertises, lazily."""

import pytest


def test_every_advertised_name_is_importable():
    import mdn_experiments
    from mdn_experiments import mdn

    for name in mdn_experiments.__all__:
        assert getattr(mdn_experiments, name) is not None, name
    assert mdn_experiments.FullMixture is mdn.FullMixture
    with pytest.raises(AttributeError):
        mdn_experiments.no_such_thing  # noqa: B018
