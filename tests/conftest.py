"""Fixtures shared by the tests (plain helpers live in helpers.py)."""

import os
from pathlib import Path

import pytest

from helpers import TINY, find_mnist_root, find_uci_root, small_table


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Overrides that shrink any run to a few seconds."""
    return list(TINY)


def shared_data(root: Path | None, message: str) -> Path:
    """A data folder the tests need (MNIST, the UCI suite): there, or the test stops with `message`."""
    if root is None:
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has ../shared beside the clone: never skip there
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    message = "the MNIST files are not found: set MDN_MNIST_ROOT to a folder holding the four .gz files"
    return shared_data(find_mnist_root(), message)


@pytest.fixture(scope="session")
def uci_root() -> Path:
    message = "the UCI suite is not found: set MDN_UCI_ROOT to a folder holding its data set folders"
    return shared_data(find_uci_root(), message)


@pytest.fixture(scope="session")
def table_csv(tmp_path_factory) -> Path:
    """helpers.small_table, written once per session."""
    return small_table(tmp_path_factory.mktemp("table") / "two.csv")


def pytest_collection_modifyitems(config, items):
    """Every test under tests/unit is `unit` (the quick tier, `make test`, with the few integration
    tests marked `quick`); the rest is `make test-all`."""
    unit = Path(__file__).parent / "unit"
    for item in items:
        if unit in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny finished toy run (figures included), trained in this process once per session and
    shared: tests read it, and copy it before changing anything."""
    from helpers import compose_config
    from mdn_experiments.run.runner import run_experiment

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    run_experiment(compose_config(list(TINY)), run_dir)
    return run_dir
