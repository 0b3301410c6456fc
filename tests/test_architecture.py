"""The architecture of docs/architecture.md holds: import rules, exports, test tiers.

The import rules are import-linter contracts in ``pyproject.toml``; ``make lint`` runs
them too.  The other checks here keep the promises no import rule can state: adapters
import only what the core exports, the page names every layer, the integrations'
unit tests run without torch, and no test reaches past loopback.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
CORE = "vlmguard_plugins"
# The packages built on the core: each may only use what the core exports.
CONSUMERS = ("server", "bench", "train")


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return list(config["tool"]["importlinter"]["contracts"])


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_contracts())} kept, 0 broken" in result.stdout


def _consumer_files() -> list[Path]:
    adapters = [
        path
        for pattern in (
            "integrations/*/*_vlmguard/**/*.py",
            *(f"{CORE}/{c}/**/*.py" for c in CONSUMERS),
        )
        for path in REPO.glob(pattern)
    ]
    return sorted(adapters)


def _imported_module(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(REPO).with_suffix("").parts)[: -node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


def _is_public(module: ModuleType, name: str) -> bool:
    if isinstance(getattr(module, name, None), ModuleType):
        return True  # a submodule: `from vlmguard_plugins import testing`
    exported = getattr(module, "__all__", None)
    return name in exported if exported is not None else not name.startswith("_")


def test_adapters_and_extensions_import_only_what_the_core_exports() -> None:
    hidden = []
    for path in _consumer_files():
        own = path.relative_to(REPO).parts[:2]  # an extension may use its own privates
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _imported_module(path, node)
            parts = target.split(".")
            if parts[0] != CORE or (len(parts) > 1 and (CORE, parts[1]) == own):
                continue
            if len(parts) > 1 and parts[1] in CONSUMERS:
                continue  # the extensions' own rules are the import contracts
            module = importlib.import_module(target)
            hidden += [
                f"{path.relative_to(REPO)}: {alias.name} from {target}"
                for alias in node.names
                if not _is_public(module, alias.name)
            ]
    assert hidden == [], "names the core does not export:\n" + "\n".join(hidden)


def _defines_all(path: Path) -> bool:
    return any(
        isinstance(node, (ast.Assign, ast.AnnAssign))
        and "__all__" in {t.id for t in ast.walk(node) if isinstance(t, ast.Name)}
        for node in ast.parse(path.read_text(encoding="utf-8")).body
    )


def test_every_module_of_the_package_says_what_it_exports() -> None:
    # The core, the gateway, the benchmark harness and training alike.
    modules = sorted((REPO / CORE).rglob("*.py"))
    silent = [str(path.relative_to(REPO)) for path in modules if not _defines_all(path)]
    assert silent == [], f"modules without __all__: {silent}"


def test_the_architecture_page_names_every_layer() -> None:
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    modules = [m.strip() for layer in layers["layers"] for m in str(layer).split("|")]  # type: ignore[attr-defined]
    missing = [m for m in modules if f"`{m}`" not in page]
    assert missing == [], f"docs/architecture.md does not describe {missing}"


@pytest.mark.parametrize(
    "tests_dir",
    sorted(REPO.glob("integrations/*/tests")),
    ids=lambda path: path.parent.name,
)
def test_integration_fixtures_load_without_torch(tests_dir: Path) -> None:
    # The integrations' unit tests run where torch is not installed; only tests that
    # ask for the tiny model (a lazy fixture) need it.
    probe = (
        "import importlib.util, sys\n"
        "for name in ('torch', 'transformers', 'vlmguard_plugins.tiny_model'):\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "sys.path[:0] = sys.argv[1:3]\n"
        "spec = importlib.util.spec_from_file_location('fixtures', sys.argv[3])\n"
        "module = sys.modules['fixtures'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
    )
    command = [sys.executable, "-c", probe, str(tests_dir.parent), str(REPO)]
    result = subprocess.run(
        [*command, str(tests_dir / "conftest.py")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_a_test_that_leaves_loopback_fails_even_when_the_error_is_swallowed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest((REPO / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(
        """
        import contextlib
        import socket

        def test_swallows_the_error():
            with contextlib.suppress(Exception):
                socket.create_connection(("192.0.2.1", 80), timeout=0.5)

        def test_raw_socket():
            with socket.socket() as sock:
                sock.connect(("198.51.100.7", 443))

        def test_loopback_is_fine():
            with socket.create_server(("127.0.0.1", 0)) as server:
                socket.create_connection(server.getsockname(), timeout=5).close()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    output = result.stdout.str()
    assert "connections refused (not loopback): 192.0.2.1:80" in output
    assert "198.51.100.7:443, which is not a loopback address" in output
