"""Command-line logic behind the thin entry points, and the one way every command reports bad input:
``error: <what was wrong> — <what is allowed>`` on one line, exit status 2, traceback only with FASTDIFF_DEBUG=1
(or ``--debug``)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

from fastdiff.config import ConfigError

DEBUG_ENV = "FASTDIFF_DEBUG"


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
            raise ConfigError(f"{arg}: unknown flag — allowed: --config FILE, --debug, key=value overrides")
        else:
            overrides.append(arg)
    return path, overrides


def one_line(err: BaseException) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the input was bad' (exit 2); imported lazily so a CLI starts without torch."""
    kinds: list[type[BaseException]] = [ConfigError]
    for module, name in (("fastdiff.lightning.checkpoint", "CheckpointError"), ("fastdiff.samplers", "SamplerError")):
        mod = sys.modules.get(module)
        if mod is not None:
            kinds.append(getattr(mod, name))
    return tuple(kinds)


def run_cli(body: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run ``body(argv)``; bad input -> one ``error:`` line and exit 2, anything else -> one line and exit 1."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return body(argv)
    except Exception as err:  # noqa: BLE001 - every failure ends as one line unless debugging
        if debug:
            raise
        if isinstance(err, user_errors()):
            print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
            return 2
        print(f"error: {type(err).__name__}: {one_line(err)} (unexpected; rerun with {DEBUG_ENV}=1 for the "
              "traceback)", file=sys.stderr, flush=True)
        return 1


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are ConfigErrors (so ``run_cli`` prints one ``error:`` line, exit 2), not usage + exit."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise ConfigError(f"{message} — see {self.prog} --help")
