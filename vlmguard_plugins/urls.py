"""Policy for image sources that name a location: http(s) URLs and local files.

Remote fetching is off by default.  When it is on, only http(s) is accepted and
every address the host resolves to must be public unless private addresses are
explicitly allowed.  The host is resolved once per hop and the connection goes to
exactly the address that was checked, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot reach another machine.  Redirects
are re-checked hop by hop, and one deadline bounds the whole fetch.

Every refusal or failure is an :class:`~vlmguard_plugins.errors.InputError`
subclass: :class:`URLPolicyError` (the URL or its address is refused),
:class:`ImageFetchError` (resolution, network, HTTP status, timeout) or
:class:`ImageTooLargeError` (the body is over ``max_bytes``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from .errors import ImageFetchError, ImageTooLargeError, InputError, URLPolicyError

if TYPE_CHECKING:
    import ssl

    import httpcore
    import httpx

__all__ = [
    "MAX_REDIRECTS",
    "MAX_URL_LENGTH",
    "CheckedURL",
    "IPAddress",
    "Resolver",
    "URLPolicy",
    "check_url",
    "fetch_image_bytes",
    "system_resolver",
]

MAX_REDIRECTS = 3

#: Longest URL accepted, in characters.  Real image URLs are far shorter (browsers
#: and CDNs cap theirs around 8 KiB too); a longer one is an attack on a parser or
#: a log, not an image location.
MAX_URL_LENGTH = 8 * 1024

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Turns ``(host, port)`` into the IP addresses (as strings) to connect to.
Resolver: TypeAlias = Callable[[str, int], Iterable[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the operating system's resolver (``getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


@dataclass(frozen=True)
class URLPolicy:
    """Where images may come from.

    Attributes:
        allow_remote: fetch http(s) image URLs at all (off by default).
        allow_private_addresses: also allow hosts that resolve to private (RFC 1918,
            unique-local, carrier-grade NAT), loopback or link-local addresses, for an
            image server on your own network.  Multicast, unspecified, reserved,
            documentation, benchmark and IPv6 transition (6to4, Teredo, IPv4-compatible,
            local NAT64) addresses stay refused either way.
        allowed_hosts: when non-empty, only these host names may be fetched.
        max_bytes: largest download accepted.
        timeout_s: one deadline for the whole fetch: resolution, connection, every
            redirect hop and the whole body.
        resolver: turns ``(host, port)`` into IP address strings; the system resolver
            when ``None``.  Injectable for tests and for private DNS set-ups.
    """

    allow_remote: bool = False
    allow_private_addresses: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    resolver: Resolver | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the policy, and the addresses its host resolved to.

    Attributes:
        url: the URL, normalised.
        host: the host in ASCII (IDNA) form, as it is sent in the ``Host`` header.
        port: the port connected to.
        addresses: every address the host resolved to; all passed the policy, and
            the fetch connects only to these.
    """

    url: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


# --- addresses ----------------------------------------------------------------------

_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# Allowed only with allow_private_addresses: networks one's own image server can be on.
_LOCAL_NETWORKS: tuple[tuple[_Network, str], ...] = (
    (ipaddress.ip_network("10.0.0.0/8"), "private"),
    (ipaddress.ip_network("172.16.0.0/12"), "private"),
    (ipaddress.ip_network("192.168.0.0/16"), "private"),
    (ipaddress.ip_network("fc00::/7"), "private (unique-local)"),
    (ipaddress.ip_network("100.64.0.0/10"), "carrier-grade NAT"),
)

# Never fetched.  Listed explicitly because ``is_global`` differs between Python
# versions (3.11 still calls multicast and some of these ranges global).
_NEVER_NETWORKS: tuple[tuple[_Network, str], ...] = (
    (ipaddress.ip_network("0.0.0.0/8"), "'this network'"),
    (ipaddress.ip_network("192.0.0.0/24"), "IETF protocol assignment"),
    (ipaddress.ip_network("192.0.2.0/24"), "documentation"),
    (ipaddress.ip_network("198.51.100.0/24"), "documentation"),
    (ipaddress.ip_network("203.0.113.0/24"), "documentation"),
    (ipaddress.ip_network("2001:db8::/32"), "documentation"),
    (ipaddress.ip_network("198.18.0.0/15"), "benchmarking"),
    (ipaddress.ip_network("240.0.0.0/4"), "reserved"),
    (ipaddress.ip_network("100::/64"), "discard-only"),
)

# IPv6 transition mechanisms that tunnel to an IPv4 address through a relay: a way
# around an IPv4 check, and deprecated or site-specific, so never fetched.
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# The well-known NAT64 prefix is what DNS64 resolvers answer on IPv6-only networks,
# so it is judged by the IPv4 address it embeds instead of being refused outright.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _low_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def _refusal(address: IPAddress) -> tuple[str, bool] | None:
    """Why ``address`` may not be fetched, and whether allow_private_addresses allows it.

    ``None`` means the address is public.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = None
        tunnel = ""
        if address.ipv4_mapped is not None:
            embedded = address.ipv4_mapped
        elif address in _NAT64:
            embedded = _low_ipv4(address)
        elif address in _SIX_TO_FOUR:
            tunnel, embedded = "6to4", address.sixtofour
        elif address in _TEREDO:
            tunnel, embedded = "Teredo", address.teredo[1] if address.teredo else None
        elif address in _LOCAL_NAT64:
            tunnel = "local-use NAT64"
        elif address in _IPV4_COMPATIBLE and int(address) > 1:
            tunnel, embedded = "IPv4-compatible", _low_ipv4(address)
        if tunnel:
            inner = f" embedding {embedded}" if embedded is not None else ""
            return f"{tunnel} tunnel{inner}", False
        if embedded is not None:
            found = _refusal(embedded)
            if found is None:
                return None
            return f"{found[0]} (embedded as {embedded})", found[1]
    if address.is_unspecified:
        return "unspecified", False
    if address.is_loopback:
        return "loopback", True
    if address.is_multicast:
        return "multicast", False
    if address.is_link_local:
        return "link-local", True
    for network, kind in _NEVER_NETWORKS:
        if address in network:
            return kind, False
    for network, kind in _LOCAL_NETWORKS:
        if address in network:
            return kind, True
    if address.is_reserved:
        return "reserved", False
    if address.is_private or not address.is_global:
        return "non-public", False
    return None


def _check_address(shown: str, host: str, address: IPAddress, policy: URLPolicy) -> None:
    refusal = _refusal(address)
    if refusal is None:
        return
    kind, allowed_when_private = refusal
    if allowed_when_private and policy.allow_private_addresses:
        return
    subject = host if _ip_literal(host) is not None else f"{host} resolves to {address}, which"
    article = "an" if kind[0].lower() in "aeiou" else "a"
    if allowed_when_private:
        raise URLPolicyError(
            f"refused image URL {shown}: {subject} is {article} {kind} address; "
            "private, loopback or link-local addresses are refused "
            "(allow them with the allow_private_image_addresses setting or "
            "URLPolicy(allow_private_addresses=True))"
        )
    raise URLPolicyError(
        f"refused image URL {shown}: {subject} is {article} {kind} address, never fetched"
    )


# --- URLs ---------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_\-]{1,63}(?<!-)")
# WHATWG URL parsers (browsers, curl, glibc's inet_aton) read a host whose last
# label is a number as an IPv4 address in decimal, octal or hex ("2130706433",
# "0x7f.1", "127.1"); nothing else spells such hosts, so they are refused.
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9A-Fa-f]*|[0-9]+)")


def _shown(url: str) -> str:
    # Messages quote the URL, but never an unbounded one.
    return repr(url if len(url) <= 200 else url[:200] + "...")


def _parse(url: str, policy: URLPolicy) -> httpx.URL:
    """Validate ``url`` up to (not including) resolution; return it parsed."""
    if not isinstance(url, str):
        raise URLPolicyError(f"refused image URL of type {type(url).__name__}: expected a str")
    shown = _shown(url)
    if len(url) > MAX_URL_LENGTH:
        raise URLPolicyError(
            f"refused image URL {shown}: it is {len(url)} characters long, over the "
            f"{MAX_URL_LENGTH}-character limit"
        )
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "file":
        raise URLPolicyError(
            f"refused image source {shown}: file:// URLs are never fetched; "
            "pass the image itself (bytes, a PIL image or a data: URL) instead"
        )
    if scheme not in ("http", "https"):
        raise URLPolicyError(
            f"refused image source {shown}: only http(s) and data: URLs are accepted"
        )
    if not policy.allow_remote:
        raise URLPolicyError(
            f"refused image URL {shown}: remote image fetching is disabled; enable it with "
            "the allow_remote_images setting (RewriterSettings, NeMo custom_data, "
            "vlmguard serve --allow-remote-images) or URLPolicy(allow_remote=True) on a "
            "Rewriter, or send the image as base64 data instead"
        )
    control = _CONTROL.search(url)
    if control:
        raise URLPolicyError(
            f"refused image URL {shown}: it contains the control character "
            f"{control.group()!r} at position {control.start()}"
        )
    import httpx

    try:
        parsed = httpx.URL(url)
    # idna's IDNAError is a UnicodeError; httpx lets it through for bad A-labels.
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise URLPolicyError(f"refused image URL {shown}: it is not a valid URL ({exc})") from exc
    if parsed.userinfo:
        raise URLPolicyError(
            f"refused image URL {shown}: user names and passwords in image URLs are not "
            "accepted (the host is what follows the '@')"
        )
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise URLPolicyError(f"refused image URL {shown}: it has no host")
    _check_host_syntax(shown, host)
    port = _port(parsed)
    if not 0 < port < 65536:
        raise URLPolicyError(f"refused image URL {shown}: invalid port {port}")
    if policy.allowed_hosts:
        names = {host.lower().rstrip("."), parsed.host.lower().rstrip(".")}
        if not names & policy.allowed_hosts:
            raise URLPolicyError(
                f"refused image URL {shown}: host {parsed.host!r} is not allow-listed"
            )
    return parsed


def _port(parsed: httpx.URL) -> int:
    # httpx leaves the range to the caller (it accepts ":0", ":-1" and ":99999").
    if parsed.port is not None:
        return parsed.port
    return 443 if parsed.scheme == "https" else 80


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_host_syntax(shown: str, host: str) -> None:
    if "%" in host:
        # Percent-encoded hosts and IPv6 zone identifiers: parsers disagree on both.
        raise URLPolicyError(f"refused image URL {shown}: invalid host {host!r}")
    if _ip_literal(host) is not None:
        return
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise URLPolicyError(f"refused image URL {shown}: invalid host name {host!r}")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise URLPolicyError(
            f"refused image URL {shown}: {host!r} is a non-canonical IPv4 address spelling; "
            "write the address as four decimal numbers"
        )


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _resolve(resolver: Resolver, shown: str, host: str, port: int, deadline: float) -> list[str]:
    """Run ``resolver`` in a helper thread so that resolution honours the deadline.

    ``getaddrinfo`` has no timeout of its own; a resolver still running at the deadline
    is abandoned (its daemon thread ends when the resolver returns).
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["addresses"] = list(resolver(host, port))
        except Exception as exc:  # any resolver failure becomes an ImageFetchError below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="vlmguard-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, _remaining(deadline)))
    if thread.is_alive():
        raise ImageFetchError(f"fetching image {shown} timed out resolving {host}")
    if "error" in outcome:
        error = outcome["error"]
        raise ImageFetchError(f"could not resolve the host of image URL {shown}: {error}") from (
            error
        )
    return cast("list[str]", outcome["addresses"])


def _check(url: str, policy: URLPolicy, deadline: float) -> tuple[httpx.URL, CheckedURL]:
    parsed = _parse(url, policy)
    shown = _shown(url)
    host = parsed.raw_host.decode("ascii")
    port = _port(parsed)
    literal = _ip_literal(host)
    if literal is not None:
        answers = [str(literal)]
    else:
        answers = _resolve(policy.resolver or system_resolver, shown, host, port, deadline)
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(str(answer)))
        except ValueError as exc:
            raise ImageFetchError(
                f"could not resolve the host of image URL {shown}: the resolver answered "
                f"{answer!r}, which is not an IP address"
            ) from exc
    if not addresses:
        raise ImageFetchError(f"could not resolve the host of image URL {shown}: no addresses")
    for address in addresses:
        _check_address(shown, host, address, policy)
    return parsed, CheckedURL(str(parsed), host, port, tuple(addresses))


def check_url(url: str, policy: URLPolicy) -> CheckedURL:
    """Check ``url`` against ``policy``, resolving its host once.

    Returns:
        The normalised URL and every address its host resolved to, all allowed.

    Raises:
        URLPolicyError: the URL, its host or one of its addresses is refused.
        ImageFetchError: the host could not be resolved within ``policy.timeout_s``.
    """
    return _check(url, policy, time.monotonic() + policy.timeout_s)[1]


# --- fetching -----------------------------------------------------------------------
#
# Pinning is hand-written: httpx resolves inside its connection pool and offers no
# hook for the address, and no well-kept library pins resolution for httpx.  So the
# URL keeps its host name (the Host header, TLS SNI and certificate verification all
# use it) while an httpcore network backend connects the socket to the checked
# address.  The same backend wraps every socket operation so that one deadline
# bounds the whole fetch: httpx's own timeouts are per operation, and a server that
# drips a byte at a time would never trip them.


class _DeadlineStream:
    """An httpcore network stream whose every operation ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def _bound(self, timeout: float | None, error: type[Exception]) -> float:
        left = _remaining(self._deadline)
        if left <= 0:
            raise error("the image fetch deadline has passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        import httpcore

        return self._stream.read(max_bytes, self._bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        import httpcore

        self._stream.write(buffer, self._bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        import httpcore

        tls = self._stream.start_tls(
            ssl_context, server_hostname, self._bound(timeout, httpcore.ConnectTimeout)
        )
        return cast("httpcore.NetworkStream", _DeadlineStream(tls, self._deadline))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _PinnedBackend:
    """An httpcore network backend that connects one host name to checked addresses."""

    def __init__(self, checked: CheckedURL, deadline: float) -> None:
        import httpcore

        self._checked = checked
        self._deadline = deadline
        self._system = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        import httpcore

        if (host, port) != (self._checked.host, self._checked.port):
            # Only the checked origin may be connected to (never reached: one pool per hop).
            raise httpcore.ConnectError(f"connection to unchecked origin {host}:{port} refused")
        failure: Exception = httpcore.ConnectError("no address to connect to")
        for address in self._checked.addresses:
            left = _remaining(self._deadline)
            if left <= 0:
                raise httpcore.ConnectTimeout("the image fetch deadline has passed")
            # An IPv4-mapped address is that IPv4 address; connect to it as such.
            target = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            try:
                stream = self._system.connect_tcp(
                    str(target or address),
                    port,
                    timeout=left if timeout is None else min(timeout, left),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return cast("httpcore.NetworkStream", _DeadlineStream(stream, self._deadline))
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        import httpcore

        raise httpcore.ConnectError("image fetches never use unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def fetch_image_bytes(url: str, policy: URLPolicy) -> bytes:
    """Download an image under ``policy``, checking every redirect hop and the size.

    Each hop's host is resolved once, every address is checked, and the connection
    goes to a checked address; ``policy.timeout_s`` bounds the whole fetch.

    Raises:
        URLPolicyError: a hop's URL or address is refused.
        ImageFetchError: resolution, connection, HTTP status, too many redirects or
            the deadline.
        ImageTooLargeError: the body is over ``policy.max_bytes``.
    """
    deadline = time.monotonic() + policy.timeout_s
    shown = _shown(url) if isinstance(url, str) else repr(url)
    current = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            parsed, checked = _check(current, policy, deadline)
            location = _fetch_hop(shown, parsed, checked, policy, deadline)
            if isinstance(location, bytes):
                return location
            current = location
    except InputError:
        raise
    except Exception as exc:
        mapped = _transport_error(shown, policy, exc)
        if mapped is None:
            raise  # a programming error: let it surface as itself
        raise mapped from exc
    raise ImageFetchError(f"fetching image {shown} failed: more than {MAX_REDIRECTS} redirects")


def _transport_error(shown: str, policy: URLPolicy, exc: Exception) -> ImageFetchError | None:
    """Map what httpcore and the socket layer raise to this package's errors."""
    import httpcore

    if isinstance(exc, (httpcore.TimeoutException, TimeoutError)):
        return ImageFetchError(f"fetching image {shown} timed out after {policy.timeout_s} s")
    transport = (
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
        httpcore.ConnectionNotAvailable,
        OSError,
        ValueError,
    )
    if isinstance(exc, transport):
        return ImageFetchError(f"fetching image {shown} failed: {exc or type(exc).__name__}")
    return None


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    # Building a context loads the CA bundle (tens of ms); one serves every fetch.
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            import httpx

            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def _fetch_hop(
    shown: str, parsed: httpx.URL, checked: CheckedURL, policy: URLPolicy, deadline: float
) -> bytes | str:
    """One request: the body, or the absolute URL a redirect points to."""
    import httpcore

    left = _remaining(deadline)
    if left <= 0:
        raise httpcore.ConnectTimeout("the image fetch deadline has passed")
    backend = cast("httpcore.NetworkBackend", _PinnedBackend(checked, deadline))
    ssl_context = _tls_context() if parsed.scheme == "https" else None
    request_url = httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )
    headers = [
        (b"Host", parsed.netloc),
        (b"Accept", b"image/*, */*;q=0.8"),
        # A compressed body would grow past max_bytes after the size check.
        (b"Accept-Encoding", b"identity"),
        (b"User-Agent", b"vlmguard-plugins"),
    ]
    # A fresh pool per hop: a pooled connection must never serve another host name.
    with (
        httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=backend) as pool,
        pool.stream(
            "GET", request_url, headers=headers, extensions={"timeout": {"pool": left}}
        ) as response,
    ):
        if response.status in (301, 302, 303, 307, 308):
            location = _header(response.headers, b"location")
            if location:
                import httpx

                try:
                    return str(parsed.join(location))
                except (httpx.InvalidURL, ValueError, TypeError) as exc:
                    raise URLPolicyError(
                        f"refused image URL {shown}: it redirects to {location[:200]!r}, "
                        f"which is not a valid URL ({exc})"
                    ) from exc
        if response.status != 200:
            raise ImageFetchError(f"fetching image {shown} failed: HTTP {response.status}")
        declared = _header(response.headers, b"content-length")
        # h11 has already refused a malformed Content-Length.
        if declared is not None and int(declared) > policy.max_bytes:
            raise ImageTooLargeError(
                f"image at {shown} is {int(declared)} bytes, over the {policy.max_bytes}-byte limit"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_stream():
            size += len(chunk)
            if size > policy.max_bytes:
                raise ImageTooLargeError(
                    f"image at {shown} is over the {policy.max_bytes}-byte limit"
                )
            chunks.append(chunk)
        return b"".join(chunks)
