"""How the command line fails: every error, usage errors included, is one `ember: error:` line on stderr."""

from __future__ import annotations

import functools
import sys
import traceback

import click

from ember.errors import EmberError

DEBUG = {"on": False}


def fail(message: str, code: int = 2):
    click.echo(f"ember: error: {message}", err=True)
    sys.exit(code)


def handles_errors(fn):
    """Turn EmberError into one line on stderr and exit 2; other exceptions into a short internal-error line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EmberError as e:
            if DEBUG["on"]:
                traceback.print_exc()
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug in Ember: say so in one line unless debugging
            if DEBUG["on"]:
                traceback.print_exc()
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            fail(f"internal error: {type(e).__name__}: {first} (rerun with --debug and report it)", 1)

    return wrapper


class OneLineErrorsGroup(click.Group):
    """A click group whose usage errors (missing argument, bad option value, unknown command) are one
    `ember: error:` line naming the command's --help, exit 2, instead of click's Usage/Try/Error block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else (prog_name or "ember")
            fail(f"{e.format_message()} (see '{where} --help')", e.exit_code)
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except click.exceptions.Abort:
            fail("interrupted", 130)
        sys.exit(code if isinstance(code, int) else 0)
