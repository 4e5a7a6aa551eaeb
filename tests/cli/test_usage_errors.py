"""Usage errors that click catches (missing argument, bad option value, unknown command or option) are one
`ember: error:` line naming the command's --help, exit 2, like every other error."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import assert_one_line_error, ember


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("compile",), ("Missing argument 'MODEL'", "'ember compile --help'")),
        (("bogus",), ("No such command 'bogus'", "'ember --help'")),
        (("run", "b", "-o", "/"), ("'-o' / '--output'", "is a directory", "'ember run --help'")),
        (("compile", "m.onnx", "--no-such-flag"), ("No such option", "'ember compile --help'")),
        (("runtime", "fetch", "--arch"), ("'--arch' requires an argument", "--help'")),
    ],
)
def test_usage_error_is_one_line(args, needles):
    assert_one_line_error(ember(*args), *needles)


def test_help_and_version_still_exit_zero():
    for args in (("--help",), ("compile", "--help"), ("--version",)):
        r = ember(*args)
        assert r.returncode == 0 and r.stdout and not r.stderr, (args, r.stderr)
