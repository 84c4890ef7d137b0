"""Atomic file writes: a temporary name in the final folder, then ``os.replace`` (a crash never leaves half a file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

TMP_MARK = ".tmp-"  # temporary files are ".<final name>.tmp-<pid>"


def temporary_path(path: Path) -> Path:
    """The temporary name used for ``path`` by this process (hidden, in the same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file next to ``path``, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
