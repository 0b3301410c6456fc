"""A pytest plugin that keeps a test suite on this machine: loopback connections only.

Enable it in a ``conftest.py`` (``pytest_plugins = ["vlmguard_plugins.testing.offline"]``)
or on the command line (``pytest -p vlmguard_plugins.testing.offline``).  While pytest
runs, a connection to an address that is not loopback (a download, a URL the guard
should have refused) raises :class:`NonLoopbackConnectionError`, naming the address,
and the test that tried fails even when the code under test swallowed the error.
Connections made by child processes are not covered.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["NonLoopbackConnectionError"]


class NonLoopbackConnectionError(RuntimeError):
    """A test tried to open a connection to an address that is not on this machine.

    Not an ``OSError``: code that handles network errors must not take it for one.
    """


_refused: list[str] = []
_originals: dict[str, Any] = {}
_sessions: list[pytest.Config] = []


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


def _guard_method(original: Callable[..., Any]) -> Callable[..., Any]:
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


def pytest_configure(config: pytest.Config) -> None:
    """Guard the socket module for the whole run."""
    _sessions.append(config)
    if _originals:  # a session inside a session (pytester): already guarded
        return
    _originals.update(
        connect=socket.socket.connect,
        connect_ex=socket.socket.connect_ex,
        create_connection=socket.create_connection,
    )
    socket.socket.connect = _guard_method(socket.socket.connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = _guard_method(socket.socket.connect_ex)  # type: ignore[method-assign]
    socket.create_connection = _guard_create_connection(socket.create_connection)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the socket module back as it was, when the outermost session ends."""
    if config in _sessions:
        _sessions.remove(config)
    if _sessions or not _originals:
        return
    socket.socket.connect = _originals.pop("connect")  # type: ignore[method-assign]
    socket.socket.connect_ex = _originals.pop("connect_ex")  # type: ignore[method-assign]
    socket.create_connection = _originals.pop("create_connection")


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
