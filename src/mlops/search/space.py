"""A search space written in Hydra's sweep syntax (what `hydra.sweeper.params` and the
command line use), turned into Optuna suggestions:

    optimizer.lr: tag(log, interval(0.0003, 0.01))   -> suggest_float(..., log=True)
    trainer.max_epochs: interval(2, 10)               -> suggest_int (both ends integers)
    data.batch_size: choice(32, 64, 128)              -> suggest_categorical
    model.hidden: range(64, 257, 64)                  -> suggest_categorical over the range
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlops.errors import ConfigError

Suggest = Callable[[Any], Any]  # takes an optuna.Trial, returns the value it suggests


def _parse(key: str, value: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
    except Exception as error:
        raise ConfigError(f"hydra.sweeper.params.{key}={value!r} is not a sweep: {error}") from None
    return override


def suggestion(key: str, value: str) -> Suggest | None:
    """How a trial draws `key`; None when `value` is a plain value, not a sweep."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    override = _parse(key, str(value))
    if not override.is_sweep_override():
        return None
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        low, high, log = sweep.start, sweep.end, "log" in sweep.tags
        if isinstance(low, int) and isinstance(high, int):
            return lambda trial: trial.suggest_int(key, low, high, log=log)
        return lambda trial: trial.suggest_float(key, float(low), float(high), log=log)
    if isinstance(sweep, ChoiceSweep):
        choices = [str(c) if not isinstance(c, int | float | bool) else c for c in sweep.list]
    elif isinstance(sweep, RangeSweep):
        choices = list(sweep.range())
    else:  # a glob over config group options
        choices = list(override.sweep_string_iterator())
    return lambda trial: trial.suggest_categorical(key, choices)


def split_arguments(
    params: Mapping[str, Any], arguments: list[str]
) -> tuple[dict[str, Suggest], list[str]]:
    """The search space (hydra.sweeper.params, then sweeps given on the command line, which
    win) and the fixed overrides every trial gets."""
    space: dict[str, Suggest] = {}
    fixed: list[str] = []
    for key, value in params.items():
        draw = suggestion(str(key), str(value))
        if draw is None:
            fixed.append(f"{key}={value}")
        else:
            space[str(key)] = draw
    for argument in arguments:
        key, _, value = argument.partition("=")
        draw = suggestion(key, value) if value else None
        if draw is None:
            fixed = [f for f in fixed if f.partition("=")[0] != key] + [argument]
            space.pop(key, None)
        else:
            space[key] = draw
    return space, fixed


def trial_overrides(space: Mapping[str, Suggest], trial) -> list[str]:
    """The Hydra overrides of one trial: each parameter as Optuna suggests it."""
    return [f"{key}={draw(trial)}" for key, draw in space.items()]
