"""Plugins (entry point group ``robench.plugins``) add to every registry, certifiers included:
a plugin module registers on import, and robench lists and builds what it registered."""
import importlib.metadata
import sys

import pytest

from robench import catalog, registry
from robench.certify import make_certifier
from robench.registry import certifiers, load_builtins

PLUGIN = '''
import torch
from robench.certify import Certification, Certifier
from robench.registry import certifiers


@certifiers.register("plugged")
class Plugged(Certifier):
    """A plugin's certifier: every example unknown."""

    name = "plugged"
    norms = ("linf",)

    def certify(self, target, x, y, threat, *, seeds=None):
        n = len(x)
        return Certification(torch.zeros(n, dtype=torch.int8), x.clone(), torch.zeros(n))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    load_builtins()
    (tmp_path / "robench_plugin_certifier.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint(name="mine", value="robench_plugin_certifier", group="robench.plugins")
    def entry_points(group=None):
        return [point] if group == "robench.plugins" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(catalog, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_loaded", False)
    yield
    certifiers._entries.pop("plugged", None)
    sys.modules.pop("robench_plugin_certifier", None)


def test_a_plugin_certifier_is_registered_listed_and_built(plugin):
    assert "plugged" in certifiers.names()
    built = make_certifier("plugged")
    assert built.sound and built.supports("linf") and not built.supports("l2")
    assert catalog.has_plugins()
    listed = dict((name, text) for name, text in catalog.sections()["certifiers"])
    assert listed["plugged"].startswith("A plugin's certifier")
