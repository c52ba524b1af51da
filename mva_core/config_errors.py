"""The configuration error every config check raises (kept apart so config checks in any module can raise it)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def key_error(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key '{key}': {message}")
