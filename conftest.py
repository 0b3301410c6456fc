"""Fixtures shared by the core tests and every integration's tests."""

from __future__ import annotations

import os
from pathlib import Path

# Nothing in the test suite may download: no hub, no tiktoken fetches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    import llama_index.core as _llama_index_core

    os.environ.setdefault(
        "TIKTOKEN_CACHE_DIR",
        str(Path(_llama_index_core.__file__).parent / "_static" / "tiktoken_cache"),
    )
except ImportError:  # the core alone is installed
    pass

import ipaddress  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

# `pytester` runs small test sessions, to test the suite's own rules (tests/test_architecture.py).
pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).parent


# --- no test reaches past this machine ------------------------------------------------
# Every server a test talks to runs on loopback.  A connection anywhere else is a bug
# (a download, a leak of a URL the guard should have refused): it is refused here, and
# the test fails even when the code under test swallows the error.  Child processes are
# not covered.


class NonLoopbackConnectionError(RuntimeError):
    """A test tried to open a connection to an address that is not on this machine."""


_refused: list[str] = []


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name other than localhost: resolving it already leaves
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _refuse(address: Any) -> None:
    host, port = (address[0], address[1]) if isinstance(address, tuple) else (address, None)
    where = f"{host}:{port}" if port is not None else str(host)
    _refused.append(where)
    raise NonLoopbackConnectionError(
        f"a test tried to connect to {where}, which is not a loopback address; "
        "tests run offline: serve what they need on 127.0.0.1 (vlmguard_plugins.testing)"
    )


def _guard_socket_method(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(self: socket.socket, address: Any, *args: Any, **kwargs: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse(address)
        return original(self, address, *args, **kwargs)

    return guarded


def _guard_create_connection(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(address: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(address[0]):
            _refuse(address)
        return original(address, *args, **kwargs)

    return guarded


socket.socket.connect = _guard_socket_method(socket.socket.connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guard_socket_method(socket.socket.connect_ex)  # type: ignore[method-assign]
socket.create_connection = _guard_create_connection(socket.create_connection)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail the test that tried to leave the machine, whatever became of the error."""
    _refused.clear()
    result = yield  # a test that failed on its own already names the address
    if _refused:
        attempts = ", ".join(dict.fromkeys(_refused))
        _refused.clear()
        pytest.fail(f"connections refused (not loopback): {attempts}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2.5-VL written once per test session."""
    from vlmguard_plugins.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark samples (``VLMGUARD_DATA_DIR``); a test that needs them fails without."""
    configured = os.environ.get("VLMGUARD_DATA_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(REPO_ROOT.parent / "shared" / "benchmarks")
    for candidate in candidates:
        if (candidate / "README.md").exists():
            return candidate.resolve()
    pytest.fail(
        "benchmark samples not found: set VLMGUARD_DATA_DIR to the benchmarks folder "
        f"(tried {', '.join(str(c) for c in candidates)})"
    )


@pytest.fixture(scope="session")
def example_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example images drawn with Pillow (the same ones `make demo` uses)."""
    from vlmguard_plugins.examples_assets import draw_example_images

    return draw_example_images(tmp_path_factory.mktemp("assets"))
