"""The built distribution carries the flows, so `import_paths` works from site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_flows_and_the_rail_readme(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(INTEGRATION),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("nemoguardrails_vlmguard-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())

    for name in (
        "flows.co",
        "flows.v1.co",
        "actions.py",
        "conversation.py",
        "README.md",
        "py.typed",
    ):
        assert f"nemoguardrails_vlmguard/{name}" in names
    # A .yml file here would be merged into every user's config by `import_paths`.
    assert not [n for n in names if n.startswith("nemoguardrails_vlmguard/") and n.endswith(".yml")]
