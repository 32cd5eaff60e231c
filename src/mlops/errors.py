"""Errors a user can fix: each message names the bad value and what to do about it."""


class MlopsError(Exception):
    """Base class: the CLI and pipelines print these as one line, without a traceback."""

    exit_code = 1  # of the mlops command that stops on it


class ConfigError(MlopsError, ValueError):
    """The config folder is missing, or an override names no key or option in it."""


class DataError(MlopsError, ValueError):
    """The data files are missing, malformed or inconsistent."""


class ModelConfigError(MlopsError, ValueError):
    """The model configuration cannot be built for this data."""


class RegistryError(MlopsError, LookupError):
    """An unknown model, version or alias, or a registry that cannot be reached."""


class LaunchError(MlopsError, RuntimeError):
    """The trainer config cannot run the way the job was launched."""


class DeployError(MlopsError, ValueError):
    """A registered version that the service cannot serve."""


def first_line(error: Exception) -> str:
    """An exception as one line of a user-facing message: torch's run to pages."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"


class CompressError(MlopsError, ValueError):
    """A compression method that cannot apply to a version, or whose result is not faithful."""


class MonitorError(MlopsError, ValueError):
    """A monitoring set-up that cannot run: a missing Prometheus, rules file or bad address."""


class DriftFound(MonitorError):
    """A monitoring report found drift: not a failure to run, so cron tells it apart."""

    exit_code = 3


class UpdateError(MlopsError, ValueError):
    """A version that cannot be reproduced or retrained as asked: no lineage, a dirty tree,
    data bytes that are gone."""


class ReproductionDiffers(UpdateError):
    """A rebuild ran but does not match the version: shown, and told apart by its exit code."""

    exit_code = 3


class TeamError(MlopsError, RuntimeError):
    """The team stack cannot start or be reached: a missing server binary, a taken port, a
    data folder its user cannot reach, wrong credentials."""
