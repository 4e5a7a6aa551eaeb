"""Silencing TVM's native log lines (written straight to fd 2) around noisy calls."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile


@contextlib.contextmanager
def native_stderr_captured():
    """Capture what native code writes to stderr; yields a list that receives the text on exit."""
    captured: list[str] = []
    fd = 2  # native code writes to file descriptor 2 whatever sys.stderr is (pytest's capture, a notebook)
    try:
        os.fstat(fd)
    except OSError:
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode(errors="replace"))


# TVM 0.27 logs a bare "Scope Saving:" / "Scope Loaded:" warning per constant when it saves or loads an executable
# whose VM has run (it recorded the constants' memory scope, always the default); they say nothing to a user
SCOPE_NOTE = re.compile(r"^\[[\d:]+\] \S+executable\.cc:\d+: Warning: Scope (Saving|Loaded):\s*$")


@contextlib.contextmanager
def scope_notes_dropped():
    """Drop TVM's empty memory-scope warnings written inside the block; pass every other native stderr line on."""
    with native_stderr_captured() as captured:
        yield
    kept = [line for line in "".join(captured).splitlines(keepends=True) if not SCOPE_NOTE.match(line)]
    if kept:
        sys.stderr.write("".join(kept))
