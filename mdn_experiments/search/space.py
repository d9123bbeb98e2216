"""The search space: Hydra's sweep syntax (`choice(...)`, `range(...)`, `interval(...)`,
`tag(log, interval(...))`, `int(interval(...))`) read into Optuna distributions, and a trial's
values written back as overrides. Every value travels as override text, so a choice may be a list
(`model.backbone.hidden=choice([50],[100,100])`) although Optuna's choices are plain scalars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mdn_experiments.errors import ConfigError, UserError, clip

MAX_CHOICES = 1000


@dataclass(frozen=True)
class Dimension:
    """One searched key: a categorical over override texts, or a numeric interval."""

    key: str
    choices: tuple[str, ...] = ()  # the override texts (categorical)
    low: float | int | None = None  # an interval's ends (numeric)
    high: float | int | None = None
    log: bool = False
    integer: bool = False

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices:
            return CategoricalDistribution(list(self.choices))
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def override(self, value: Any) -> str:
        """The override that sets this key to a trial's value."""
        return f"{self.key}={value if self.choices else as_text(value)}"


def as_text(value: Any) -> str:
    """A parsed override value as override text (lists and numbers as Hydra reads them back)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(as_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{as_text(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_space(params: dict[str, Any], where: str) -> list[Dimension]:
    """The dimensions of `params` ({key: sweep text}); a key whose text is one plain value is fixed
    for every trial and returned as a one-choice dimension. ConfigError/UserError in one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    dims = []
    for key, text in params.items():
        key = str(key)
        if key.startswith(("hydra.", "hydra/", "+", "~")) or key in ("search", "seed") or key.startswith("search."):
            raise ConfigError(
                f"{where}.{key}", text, "a setting of the run (K, model.*, trainer.*, ...), not of Hydra or the search"
            )
        try:
            override = parser.parse_override(f"{key}={as_text(text) if not isinstance(text, str) else text}")
        except HydraException as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{where}.{key}={clip(text, 200)} cannot be read as a sweep ({clip(first, 200)})") from None
        value = override.value()
        if isinstance(value, IntervalSweep):
            if value.start is None or value.end is None or not value.start < value.end:
                raise ConfigError(f"{where}.{key}", text, "interval(LOW, HIGH) with LOW < HIGH")
            log = "log" in (value.tags or set())
            if log and value.start <= 0:
                raise ConfigError(f"{where}.{key}", text, "tag(log, interval(LOW, HIGH)) with LOW > 0")
            integer = isinstance(value.start, int) and isinstance(value.end, int)
            dims.append(Dimension(key, low=value.start, high=value.end, log=log, integer=integer))
            continue
        if isinstance(value, RangeSweep):
            items = list(override.sweep_iterator())
        elif isinstance(value, ChoiceSweep):
            items = list(value.list)
        else:
            items = [value]
        texts = tuple(dict.fromkeys(as_text(item) for item in items))
        if not 1 <= len(texts) <= MAX_CHOICES:
            raise ConfigError(f"{where}.{key}", text, f"from 1 to {MAX_CHOICES} choices")
        dims.append(Dimension(key, choices=texts))
    return dims
