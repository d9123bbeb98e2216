"""Composing a config outside `mdn-run`: the one helper the tools and the tests use, giving the
config mdn-run would see for the same overrides."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def config_dir() -> str:
    """The config tree: inside the installed package, or conf/ beside it in a source checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no config.yaml under {package / 'conf'} or {package.parent / 'conf'}")


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False) -> DictConfig:
    """The composed config for these overrides, exactly as `mdn-run` would see it (checked as
    mdn-run checks it: guard.check_composed; a refusal is its one-line UserError)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mdn_experiments.config import guard

    guard.install()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return hydra_compose("config", overrides=overrides or [], return_hydra_config=return_hydra_config)
    except guard.Refused as refused:
        raise refused.error from None
