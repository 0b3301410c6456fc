"""What the distributions ship: licences, bounded requirements, extras, sdists without tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from vlmguard_plugins.backends import load_backend
from vlmguard_plugins.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
INTEGRATIONS = ("langchain", "llama-index", "nemoguardrails")

_BUILD = (
    "import sys; from setuptools import build_meta as b; "
    "print(getattr(b, sys.argv[1])(sys.argv[2]))"
)


_IGNORED = (".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "site", "logs")
_NOT_SOURCES = shutil.ignore_patterns(*_IGNORED, ".*_cache")


def _build(project: Path, kind: str, out: Path) -> Path:
    """Build ``project``'s wheel or sdist offline, with the installed setuptools.

    The build runs on a copy, so it never writes ``build/`` or ``*.egg-info`` into the
    working tree the editable install serves from.
    """
    source = out / "source"
    ignore = _NOT_SOURCES
    if project == ROOT:  # the integrations are distributions of their own
        ignore = shutil.ignore_patterns(*_IGNORED, "integrations")
    shutil.copytree(project, source, ignore=ignore)
    completed = subprocess.run(
        [sys.executable, "-c", _BUILD, f"build_{kind}", str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return out / completed.stdout.strip().splitlines()[-1]


def _metadata(wheel: Path) -> tuple[list[str], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        return names, archive.read(metadata).decode()


def test_core_wheel_ships_the_licence_and_the_cli_dependencies(tmp_path: Path) -> None:
    names, metadata = _metadata(_build(ROOT, "wheel", tmp_path))
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    # The `vlmguard` script runs with the base install: typer and rich are not extras.
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("Requires-Dist: typer") and "extra ==" not in r for r in requires)
    assert any(r.startswith("Requires-Dist: rich") and "extra ==" not in r for r in requires)
    assert not any(n.startswith("tests/") for n in names)


def test_core_sdist_ships_the_licence_and_no_tests(tmp_path: Path) -> None:
    sdist = _build(ROOT, "sdist", tmp_path)
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert "LICENSE" in names
    assert not any(name.startswith("tests/") for name in names)


@pytest.mark.parametrize("integration", INTEGRATIONS)
def test_integration_wheel_is_bounded_licensed_and_offers_extras(
    integration: str, tmp_path: Path
) -> None:
    project = ROOT / "integrations" / integration
    assert (project / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    names, metadata = _metadata(_build(project, "wheel", tmp_path / "wheel"))
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "Requires-Dist: vlmguard-plugins<0.2,>=0.1" in metadata
    for extra in ("local", "remote"):
        assert f"Provides-Extra: {extra}" in metadata
        assert f'Requires-Dist: vlmguard-plugins[{extra}]; extra == "{extra}"' in metadata
    with tarfile.open(_build(project, "sdist", tmp_path / "sdist")) as archive:
        sdist_names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert "LICENSE" in sdist_names
    assert not any(name.startswith("tests/") for name in sdist_names)


def test_licence_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize(("blocked", "name"), [("torch", "transformers"), ("openai", "openai")])
def test_a_backend_without_its_extra_names_it(
    blocked: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The packages load lazily, when the backend is built: the hint must come from there too.
    monkeypatch.setitem(sys.modules, blocked, None)
    extra = {"transformers": "local", "openai": "remote"}[name]
    with pytest.raises(ConfigurationError, match=rf"pip install 'vlmguard-plugins\[{extra}\]'"):
        load_backend(name, model="some/model")
