"""The Makefile's targets point at commands and scripts that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_script_a_target_runs_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    scripts = re.findall(r"\$\(PY\) (\S+\.py)", makefile)
    modules = re.findall(r"\$\(PY\) -m (\S+)", makefile)
    assert "perf/perf_core.py" in scripts
    for script in scripts:
        assert (ROOT / script).is_file(), script
    for module in modules:
        if module.startswith("vlmguard_plugins"):
            path = ROOT / module.replace(".", "/")
            assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
