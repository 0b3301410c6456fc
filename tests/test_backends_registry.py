"""``load_backend`` by name: built-ins, plugins through the entry-point group, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlmguard_plugins import Rewriter, available_backends, load_backend
from vlmguard_plugins.errors import ConfigurationError
from vlmguard_plugins.testing import ScriptedBackend


def test_builtin_names() -> None:
    assert {"transformers", "openai", "scripted"} <= set(available_backends())
    backend = load_backend("scripted", outputs=["<rewrite>Be safe.</rewrite>"])
    assert isinstance(backend, ScriptedBackend)
    assert Rewriter(backend=backend).rewrite("x").prompt == "Be safe."


def test_unknown_backend_lists_the_available_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown backend 'nope'.*transformers"):
        load_backend("nope")


def test_a_plugin_package_adds_a_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed distribution (its dist-info on sys.path) declaring the entry point.
    package = tmp_path / "acme_backend.py"
    package.write_text(
        "from vlmguard_plugins.testing import ScriptedBackend\n"
        "class AcmeBackend(ScriptedBackend):\n"
        "    name = 'acme'\n"
    )
    dist_info = tmp_path / "acme_backend-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-backend\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[vlmguard_plugins.backends]\nacme = acme_backend:AcmeBackend\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "acme" in available_backends()
    backend = load_backend("acme", outputs=["<rewrite>From the plugin.</rewrite>"])
    assert backend.name == "acme"
    assert Rewriter(backend=backend).rewrite("x").prompt == "From the plugin."
    sys.modules.pop("acme_backend", None)


def test_wrong_settings_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="invalid settings for backend 'openai'.*model"):
        load_backend("openai", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigurationError, match="'scripted'.*colour"):
        load_backend("scripted", colour="red")
