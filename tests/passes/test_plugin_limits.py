"""Installed pass packages that never finish importing stop with one line instead of hanging Ember."""

from __future__ import annotations

import pytest

from ember.errors import EmberError
from ember.passes import plugins


class _HangingEntryPoint:
    name, value = "stuck", "stuck_passes"

    def load(self):
        while True:
            pass


def test_entry_point_that_never_returns_times_out(monkeypatch):
    monkeypatch.setattr(plugins, "entry_points", lambda group: [_HangingEntryPoint()])
    monkeypatch.setitem(plugins._LOADED, "entry_points", False)
    monkeypatch.setenv(plugins.TIMEOUT_ENV, "0.5")
    with pytest.raises(EmberError, match="'stuck_passes' did not finish importing within 0.5 s"):
        plugins.load_entry_points()


def test_timeout_must_be_a_number(monkeypatch, tmp_path):
    monkeypatch.setenv(plugins.TIMEOUT_ENV, "soon")
    (tmp_path / "p.py").write_text("x = 1\n")
    with pytest.raises(EmberError, match="EMBER_PLUGIN_TIMEOUT='soon' is not a number"):
        plugins.load_plugin(tmp_path / "p.py")
