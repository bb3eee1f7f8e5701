"""Reading a setting from the environment: the error that names a missing or malformed variable, and
the two readers every settings class uses (`mlops_shared.config` names them too).

Its own module, standard library only: logic that reads its own settings (scoring, deployment)
imports only this, not the settings classes of `config`, at cold start (bench P5).
"""
from __future__ import annotations

from collections.abc import Mapping


class ConfigurationError(RuntimeError):
    """A required environment variable is missing or malformed."""


def required_env(environ: Mapping[str, str], name: str) -> str:
    """The variable's value; ConfigurationError naming it when unset or blank."""
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is required but not set")
    return value


def int_env(environ: Mapping[str, str], name: str, default: int, minimum: int = 0,
            kind: str = "environment variable") -> int:
    """The variable as an integer >= `minimum` (`default` when unset); ConfigurationError naming it
    (as a `kind`: an environment variable, or a pipeline parameter)."""
    raw = str(environ.get(name, "")).strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{kind} {name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigurationError(f"{kind} {name} must be >= {minimum}, got {value}")
    return value
