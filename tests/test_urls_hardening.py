"""The image URL policy against hostile input: address ranges, parser tricks,
DNS rebinding and slow servers.  Every server here is real and on loopback; DNS is
a scripted resolver so that no test touches the network.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmguard_plugins import urls
from vlmguard_plugins.errors import (
    ImageFetchError,
    ImageTooLargeError,
    InputError,
    URLPolicyError,
)
from vlmguard_plugins.urls import URLPolicy, check_url, fetch_image_bytes

# A public address (not in any refused range) that the tests never actually reach.
PUBLIC = "93.184.215.14"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "green").save(buffer, format="PNG")
    return buffer.getvalue()


class ScriptedResolver:
    """Answers each lookup from a script (the last answer repeats) and records the calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class Server:
    """A threaded HTTP server on a loopback address; ``handle`` answers every GET."""

    def __init__(
        self, handle: Callable[[BaseHTTPRequestHandler], None], host: str, port: int
    ) -> None:
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests.append({"path": self.path, "host": self.headers["Host"]})
                # The client may hang up first (the deadline tests do that on purpose).
                with contextlib.suppress(OSError):
                    handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_png(handler: BaseHTTPRequestHandler) -> None:
    body = png()
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(
        handle: Callable[[BaseHTTPRequestHandler], None], host: str = "127.0.0.1", port: int = 0
    ) -> Server:
        servers.append(Server(handle, host, port))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def remote(**kwargs: Any) -> URLPolicy:
    return URLPolicy(allow_remote=True, **kwargs)


# --- hostile URLs -------------------------------------------------------------------

HOSTILE_URLS = [
    "http://exa\tmple.com/",
    "http://example.com/\x00.png",
    "http://example.com/a.png\n",
    "http://example.com\r\nX-Injected: 1/",
    "http://exa mple.com/",
    "http://exa%20mple.com/",
    "http://%31%32%37.0.0.1/",
    "http://[::1/",
    "http://[zz::1]/",
    "http://[fe80::1%25eth0]/",
    "http://example.com:99999/",
    "http://example.com:0/",
    "http://example.com:-1/",
    "http://example.com:http/",
    "http://example.com/" + "a" * urls.MAX_URL_LENGTH,
    "http://" + "a" * 64 + ".com/",
    "http://\u2603.com/",
    "http://a\u200db.com/",
    "http://\udcff.com/",
    "http://xn--zz.com/",
    "http://public@127.0.0.1/",
    "http://user:secret@example.com/",
    "http://example.com\\@127.0.0.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://127.0.0.1./",
    "http://localhost/",
    "http://localhost./",
    "http:///no-host",
    "http://:80/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    "http://[2001:db8::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "gopher://example.com/",
    "file:///etc/passwd",
    "//example.com/a.png",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_urls_are_refused_with_typed_errors(url: str) -> None:
    # Every name "resolves" to loopback, so a URL that gets as far as resolution is
    # refused on its address; none may reach the network or raise a foreign error.
    policy = remote(resolver=ScriptedResolver(["127.0.0.1"]))
    with pytest.raises(InputError) as refused:
        check_url(url, policy)
    assert type(refused.value) in (URLPolicyError, ImageFetchError)
    with pytest.raises(InputError) as refused:
        fetch_image_bytes(url, policy)
    assert type(refused.value) in (URLPolicyError, ImageFetchError)


def test_non_string_urls_are_refused() -> None:
    with pytest.raises(URLPolicyError):
        check_url(b"http://example.com/", remote())  # type: ignore[arg-type]


def test_userinfo_and_numeric_spellings_name_the_problem() -> None:
    policy = remote(resolver=ScriptedResolver([PUBLIC]))
    with pytest.raises(URLPolicyError, match="user names and passwords"):
        check_url("http://public@127.0.0.1/", policy)
    with pytest.raises(URLPolicyError, match="non-canonical IPv4"):
        check_url("http://0x7f.1/", policy)
    with pytest.raises(URLPolicyError, match="8192-character limit"):
        check_url("http://example.com/" + "a" * 9000, policy)
    assert policy.resolver.calls == []  # type: ignore[union-attr]


def test_a_public_name_passes_and_reports_its_addresses() -> None:
    policy = remote(resolver=ScriptedResolver([PUBLIC, "2606:4700::1111"]))
    checked = check_url("https://B\u00fccher.example/cover.png", policy)
    assert checked.host == "xn--bcher-kva.example" and checked.port == 443
    assert [str(a) for a in checked.addresses] == [PUBLIC, "2606:4700::1111"]


# --- address ranges -----------------------------------------------------------------

# (address, allowed by default, allowed with allow_private_addresses=True)
ADDRESSES = [
    (PUBLIC, True, True),
    ("2606:4700::1111", True, True),
    (f"::ffff:{PUBLIC}", True, True),
    ("64:ff9b::5db8:d70e", True, True),  # NAT64 of a public IPv4 (DNS64 networks)
    ("10.1.2.3", False, True),
    ("172.16.0.1", False, True),
    ("192.168.1.1", False, True),
    ("100.64.0.1", False, True),
    ("127.0.0.1", False, True),
    ("::1", False, True),
    ("fd00::1", False, True),
    ("169.254.169.254", False, True),
    ("fe80::1", False, True),
    ("::ffff:10.0.0.1", False, True),
    ("::ffff:169.254.169.254", False, True),
    ("64:ff9b::a9fe:a9fe", False, True),  # NAT64 of 169.254.169.254
    ("0.0.0.0", False, False),
    ("::", False, False),
    ("0.1.2.3", False, False),
    ("224.0.0.1", False, False),
    ("239.255.255.250", False, False),
    ("ff02::1", False, False),
    ("240.0.0.1", False, False),
    ("255.255.255.255", False, False),
    ("192.0.0.8", False, False),
    ("192.0.2.1", False, False),
    ("198.51.100.7", False, False),
    ("203.0.113.9", False, False),
    ("2001:db8::1", False, False),
    ("198.18.0.1", False, False),
    ("198.19.255.255", False, False),
    ("2002:7f00:1::1", False, False),  # 6to4 of 127.0.0.1
    ("2002:5db8:d70e::1", False, False),  # 6to4, even of a public IPv4
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False, False),  # Teredo
    ("64:ff9b:1::a00:1", False, False),  # local-use NAT64
    ("::7f00:1", False, False),  # IPv4-compatible 127.0.0.1
    ("::ffff:0.0.0.0", False, False),
    ("::ffff:224.0.0.1", False, False),
]


@pytest.mark.parametrize(("address", "public", "private_ok"), ADDRESSES)
def test_address_policy(address: str, public: bool, private_ok: bool) -> None:
    url = "http://images.test/cat.png"
    for allow_private, allowed in ((False, public), (True, private_ok)):
        policy = remote(allow_private_addresses=allow_private, resolver=ScriptedResolver([address]))
        if allowed:
            assert check_url(url, policy).addresses == (ipaddress.ip_address(address),)
        else:
            with pytest.raises(URLPolicyError, match="refused image URL"):
                check_url(url, policy)


def test_every_resolved_address_is_checked() -> None:
    policy = remote(resolver=ScriptedResolver([PUBLIC, "10.0.0.1"]))
    with pytest.raises(URLPolicyError, match="10.0.0.1.*allow_private_addresses"):
        check_url("http://images.test/", policy)
    with pytest.raises(URLPolicyError, match="never fetched"):
        check_url("http://images.test/", remote(resolver=ScriptedResolver([PUBLIC, "0.0.0.0"])))


@pytest.mark.parametrize(
    ("answer", "message"),
    [([], "no addresses"), (["not-an-ip"], "not an IP address")],
)
def test_bad_resolver_answers_are_fetch_errors(answer: list[str], message: str) -> None:
    with pytest.raises(ImageFetchError, match=message):
        check_url("http://images.test/", remote(resolver=ScriptedResolver(answer)))


def test_resolver_failure_is_a_fetch_error() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(ImageFetchError, match="could not resolve"):
        fetch_image_bytes("http://images.test/", remote(resolver=fail))


# --- DNS rebinding: one resolution, one checked address -----------------------------


def test_connection_goes_to_the_checked_address(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resolver answers a public address first and loopback afterwards: a client
    # that resolves again at connect time would reach the loopback server.
    server = serve(send_png)
    resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])
    dialled: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        dialled.append(address)
        raise ConnectionRefusedError("the test network has no route to the public address")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    with pytest.raises(ImageFetchError):
        fetch_image_bytes(f"http://rebind.test:{server.port}/cat.png", remote(resolver=resolver))
    assert dialled == [(PUBLIC, server.port)]
    assert resolver.calls == [("rebind.test", server.port)]
    assert server.requests == []


def test_pinned_connection_keeps_the_host_name(serve: Callable[..., Server]) -> None:
    # Two servers on the same port of two loopback addresses; only one is checked.
    checked = serve(send_png, "127.0.0.1")
    other = serve(send_png, "127.0.0.2", checked.port)
    resolver = ScriptedResolver(["127.0.0.1"], ["127.0.0.2"])
    policy = remote(allow_private_addresses=True, resolver=resolver)

    assert fetch_image_bytes(f"http://images.test:{checked.port}/cat.png", policy) == png()
    assert checked.requests == [{"path": "/cat.png", "host": f"images.test:{checked.port}"}]
    assert other.requests == []
    assert len(resolver.calls) == 1


def test_redirect_hops_are_resolved_and_checked_again(serve: Callable[..., Server]) -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/cat.png":
            return send_png(handler)
        target = {"/next": "http://second.test:{port}/cat.png", "/evil": "http://meta.test/"}
        handler.send_response(302)
        handler.send_header("Location", target[handler.path].format(port=server.port))
        handler.end_headers()

    server = serve(redirect)
    resolver = ScriptedResolver(["127.0.0.1"])
    policy = remote(allow_private_addresses=True, resolver=resolver)
    assert fetch_image_bytes(f"http://first.test:{server.port}/next", policy) == png()
    assert resolver.calls == [("first.test", server.port), ("second.test", server.port)]
    policy = remote(
        allow_private_addresses=True, resolver=ScriptedResolver(["127.0.0.1"], ["224.0.0.1"])
    )
    with pytest.raises(URLPolicyError, match="meta.test resolves to 224.0.0.1"):
        fetch_image_bytes(f"http://first.test:{server.port}/evil", policy)


def test_redirect_loops_and_bad_locations_are_refused(serve: Callable[..., Server]) -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        location = "/loop" if handler.path == "/loop" else "http://[zz::1]/"
        handler.send_response(301)
        handler.send_header("Location", location)
        handler.end_headers()

    server = serve(redirect)
    policy = remote(allow_private_addresses=True)
    with pytest.raises(ImageFetchError, match="more than 3 redirects"):
        fetch_image_bytes(f"http://127.0.0.1:{server.port}/loop", policy)
    with pytest.raises(URLPolicyError):
        fetch_image_bytes(f"http://127.0.0.1:{server.port}/bad", policy)


# --- one deadline ---------------------------------------------------------------------


def test_slow_drip_is_cut_at_the_deadline(serve: Callable[..., Server]) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.2)

    server = serve(drip)
    policy = remote(allow_private_addresses=True, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="timed out after 1.0 s"):
        fetch_image_bytes(f"http://127.0.0.1:{server.port}/drip", policy)
    # Each byte arrives well within any per-read timeout; only a deadline stops this.
    assert time.monotonic() - started < policy.timeout_s + 2


def test_slow_resolution_counts_against_the_deadline() -> None:
    release = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        release.wait(10)
        return [PUBLIC]

    started = time.monotonic()
    try:
        with pytest.raises(ImageFetchError, match="timed out resolving"):
            fetch_image_bytes("http://slow.test/", remote(resolver=slow, timeout_s=0.3))
    finally:
        release.set()
    assert time.monotonic() - started < 0.3 + 2


# --- responses ----------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_with_or_without_a_length(
    serve: Callable[..., Server],
) -> None:
    def big(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if handler.path == "/declared":
            handler.send_header("Content-Length", "5000")
        handler.end_headers()
        handler.wfile.write(b"x" * 5000)

    server = serve(big)
    policy = remote(allow_private_addresses=True, max_bytes=1000)
    with pytest.raises(ImageTooLargeError, match="5000 bytes"):
        fetch_image_bytes(f"http://127.0.0.1:{server.port}/declared", policy)
    with pytest.raises(ImageTooLargeError, match="over the 1000-byte limit"):
        fetch_image_bytes(f"http://127.0.0.1:{server.port}/undeclared", policy)


def test_garbage_responses_are_fetch_errors(serve: Callable[..., Server]) -> None:
    def garbage(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"this is not HTTP\r\n\r\n")

    server = serve(garbage)
    with pytest.raises(ImageFetchError):
        fetch_image_bytes(f"http://127.0.0.1:{server.port}/", remote(allow_private_addresses=True))


# --- TLS: the certificate is verified for the host name, not the pinned address ----


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """An https server on 127.0.0.1 with a self-signed certificate for images.test."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def record_server_name(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        server_names.append(str(name))

    context.sni_callback = record_server_name  # type: ignore[assignment]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            send_png(self)

        def log_message(self, *args: object) -> None:
            pass

    class TLSServer(ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True), address

    httpd = TLSServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    trusting = ssl.create_default_context(cafile=str(cert))
    original = urls._ssl_context
    urls._ssl_context = trusting
    try:
        yield httpd.server_address[1], server_names
    finally:
        urls._ssl_context = original
        httpd.shutdown()
        httpd.server_close()


def test_tls_verifies_the_host_name_on_the_pinned_address(
    tls_server: tuple[int, list[str]],
) -> None:
    port, server_names = tls_server
    policy = remote(allow_private_addresses=True, resolver=ScriptedResolver(["127.0.0.1"]))
    assert fetch_image_bytes(f"https://images.test:{port}/cat.png", policy) == png()
    assert server_names == ["images.test"]
    # The same address under a name the certificate does not cover is refused.
    with pytest.raises(ImageFetchError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        fetch_image_bytes(f"https://other.test:{port}/cat.png", policy)
