"""Writing output files atomically: a temporary file beside the target, then a rename, so a failure midway
never leaves a partial file or damages the one already there."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ember.errors import EmberError

Writer = Callable[[BinaryIO], object]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(files: dict[Path, Writer]) -> None:
    """Write every file to a temporary beside it, then rename them all into place: when any write fails,
    none of the targets changes (files that belong together, like an .ir and its .npz, stay matched)."""
    temps: dict[Path, str] = {}
    try:
        for out, write in files.items():
            try:
                fd, temps[out] = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.chmod(temps[out], 0o666 & ~_umask())
            except OSError as e:
                raise EmberError(f"cannot write '{out}': {e.strerror or e}") from None
        for out, tmp in temps.items():
            os.replace(tmp, out)
    except BaseException:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic({Path(path): lambda f: f.write(text.encode())})
