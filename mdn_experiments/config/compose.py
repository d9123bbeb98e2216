"""Composing a config outside `mdn-run`: the one helper the tools and the tests use, giving the
config mdn-run would see for the same overrides."""

from __future__ import annotations

import re
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


def composition_error(message: str, prog: str = "mdn-run") -> str:
    """Condense a Hydra/OmegaConf composition error (its text, the cause's included) into one line
    naming the key and what it allows; `prog` is the command whose --cfg job lists the keys."""
    text = message.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "")
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.search(r"Available options in '[^']+':\s*\n((?:\s+\S+\n?)+)", text)
        choices = ", ".join(options.group(1).split()) if options else "see mdn-run --help"
        return f"{group}={option}: no such option; {group} must be one of: {choices}"
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' (?:is not in struct|not in)", text
    )
    if unknown:
        return (
            f"{unknown.group(1)}: unknown config key (misspelled?); see the valid keys with "
            f"'{prog} --cfg job', or add a new key with +{unknown.group(1)}=..."
        )
    choice = re.search(r"Invalid value '([^']*)', expected one of \[([^\]]*)\]", text)
    if choice:
        key = re.search(r"full_key: (\S+)", text)
        name = key.group(1) if key else "value"
        return f"{name}={choice.group(1)!r} is not allowed: {name} must be one of {choice.group(2)}"
    converted = re.search(r"Value '([^']*)' of type '\w+' could not be converted to (\w+)", text)
    if converted:
        key = re.search(r"full_key: (\S+)", text)
        name = key.group(1) if key else "value"
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(
            converted.group(2), converted.group(2)
        )
        return f"{name}={converted.group(1)!r} is not allowed: {name} must be {kind}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[:3]) if lines else "configuration error"
