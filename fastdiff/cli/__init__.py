"""Command-line logic behind the thin entry points (``train.py``: :func:`fastdiff.cli.train.main`)."""
from __future__ import annotations

from fastdiff.config import ConfigError


def split_cli_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """``[--config FILE | --config=FILE] key=value ...`` -> (path, overrides)."""
    path: str | None = None
    overrides: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            path = next(it, None)
            if path is None:
                raise ConfigError("--config: expects a file path")
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise ConfigError(f"{arg}: unknown flag; usage: [--config FILE] [key=value ...]")
        else:
            overrides.append(arg)
    return path, overrides
