"""Loading passes from user files (--pass-plugin) and installed packages (entry-point group ember.passes).

Plugins run arbitrary Python: Ember loads only files named on the command line and packages the user
installed."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

from ember.errors import EmberError
from ember.passes import manager

ENTRY_POINT_GROUP = "ember.passes"
_LOADED = {"entry_points": False}
_FILES: dict[str, list[str]] = {}
TIMEOUT_ENV = "EMBER_PLUGIN_TIMEOUT"


class _PluginTimeout(BaseException):
    """Raised inside a plugin's import when it runs past the time limit."""


def _timeout_s() -> float:
    value = os.environ.get(TIMEOUT_ENV, "60")
    try:
        seconds = float(value)
    except ValueError:
        raise EmberError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    return seconds


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after `seconds` with SIGALRM. Only in the main thread on POSIX: elsewhere (other
    threads, Windows) the block runs without a limit. Code stuck inside one C call is interrupted when that
    call returns. A timer that was already set resumes with its remaining time."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _PluginTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


@contextlib.contextmanager
def pass_time_limit(name: str, origin: str):
    """Run a plugin's pass under the EMBER_PLUGIN_TIMEOUT limit: past it, one EmberError naming the pass and
    the plugin (the graph is then half rewritten, so the caller must not write it)."""
    seconds = _timeout_s()
    try:
        with _time_limit(seconds):
            yield
    except _PluginTimeout:
        raise EmberError(
            f"pass '{name}' did not finish within {seconds:g} s",
            file=origin,
            hint=f"{TIMEOUT_ENV} sets the limit per plugin pass; 0 turns it off",
        ) from None


def _registering(origin: str):
    class _Ctx:
        def __enter__(self):
            self.saved = manager._ORIGIN["current"]
            manager._ORIGIN["current"] = origin
            self.before = set(manager._PASSES)

        def __exit__(self, *exc):
            manager._ORIGIN["current"] = self.saved
            self.added = sorted(set(manager._PASSES) - self.before)

    return _Ctx()


def load_plugin(path: str | os.PathLike) -> list[str]:
    """Import a Python file that registers passes; returns the names it registered."""
    p = Path(path).resolve()
    key = str(p)
    if key in _FILES:
        return _FILES[key]
    if not p.is_file():
        raise EmberError("pass plugin not found", file=str(path))
    spec = importlib.util.spec_from_file_location(f"ember_plugin_{abs(hash(key))}", p)
    module = importlib.util.module_from_spec(spec)
    ctx = _registering(str(path))
    seconds = _timeout_s()
    try:
        with ctx, _time_limit(seconds):
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
    except _PluginTimeout:
        sys.modules.pop(spec.name, None)
        raise EmberError(
            f"pass plugin did not finish importing within {seconds:g} s",
            file=str(path),
            hint=f"a plugin's top level should only register passes; {TIMEOUT_ENV} sets the limit",
        ) from None
    except EmberError as e:
        sys.modules.pop(spec.name, None)
        raise EmberError(f"pass plugin failed to load: {e.message}", file=str(path), hint=e.hint) from None
    except BaseException as e:  # the plugin's own error, whatever it is
        sys.modules.pop(spec.name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        line = ""
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(p):
                line = f" at line {tb.tb_lineno}"
            tb = tb.tb_next
        if isinstance(e, SyntaxError) and e.lineno:
            line = f" at line {e.lineno}"
        raise EmberError(
            f"pass plugin failed to import{line}: {type(e).__name__}: {str(e)[:200]}", file=str(path)
        ) from None
    if not ctx.added:
        raise EmberError(
            "pass plugin registered no pass",
            file=str(path),
            hint="decorate a function with @ember.passes.register('my-pass', description='...')",
        )
    _FILES[key] = ctx.added
    return ctx.added


def load_entry_points() -> None:
    """Import installed packages that declare passes in the `ember.passes` entry-point group (once)."""
    if _LOADED["entry_points"]:
        return
    _LOADED["entry_points"] = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        seconds = _timeout_s()
        with _registering(f"entry point {ep.name} ({ep.value})"):
            try:
                with _time_limit(seconds):
                    ep.load()
            except _PluginTimeout:
                raise EmberError(
                    f"installed pass package '{ep.value}' did not finish importing within {seconds:g} s",
                    hint=f"{TIMEOUT_ENV} sets the limit; pip uninstall the package to skip it",
                ) from None
            except Exception as e:
                raise EmberError(
                    f"installed pass package '{ep.value}' failed to load: {type(e).__name__}: {str(e)[:200]}"
                ) from None
