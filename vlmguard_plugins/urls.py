"""Policy for image sources that name a location: http(s) URLs and local files.

Remote fetching is off by default.  When it is on, only http(s) is accepted, every
address the host resolves to must be public (no private, loopback, link-local,
multicast or reserved ranges) unless private addresses are explicitly allowed,
redirects are re-checked hop by hop, and size and time are bounded.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from .errors import ImageFetchError, ImageTooLargeError, URLPolicyError

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class URLPolicy:
    """Where images may come from.

    Attributes:
        allow_remote: fetch http(s) image URLs at all (off by default).
        allow_private_addresses: allow hosts that resolve to private, loopback or
            link-local addresses (for an image server on your own network).
        allowed_hosts: when non-empty, only these host names may be fetched.
        max_bytes: largest download accepted.
        timeout_s: time limit for the whole fetch (connect + read).
    """

    allow_remote: bool = False
    allow_private_addresses: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url(url: str, policy: URLPolicy) -> None:
    """Raise :class:`URLPolicyError` unless ``url`` may be fetched under ``policy``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        raise URLPolicyError(
            f"refused image source {url!r}: file:// URLs are never fetched; "
            "pass the image itself (bytes, a PIL image or a data: URL) instead"
        )
    if scheme not in ("http", "https"):
        raise URLPolicyError(
            f"refused image source {url!r}: only http(s) and data: URLs are accepted"
        )
    if not policy.allow_remote:
        raise URLPolicyError(
            f"refused image URL {url!r}: remote image fetching is disabled; enable it with "
            "URLPolicy(allow_remote=True) or pass the image bytes instead"
        )
    host = parts.hostname
    if not host:
        raise URLPolicyError(f"refused image URL {url!r}: it has no host")
    if policy.allowed_hosts and host.lower() not in policy.allowed_hosts:
        raise URLPolicyError(f"refused image URL {url!r}: host {host!r} is not allow-listed")
    if policy.allow_private_addresses:
        return
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise URLPolicyError(f"refused image URL {url!r}: invalid port") from exc
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ImageFetchError(f"could not resolve the host of image URL {url!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not _is_public(address):
            raise URLPolicyError(
                f"refused image URL {url!r}: {host} resolves to {address}, a private, "
                "loopback or link-local address (set allow_private_addresses=True to allow it)"
            )


def fetch_image_bytes(url: str, policy: URLPolicy) -> bytes:
    """Download an image under ``policy``, checking every redirect hop and the size."""
    import httpx

    current = url
    try:
        with httpx.Client(timeout=policy.timeout_s, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                check_url(current, policy)
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise ImageFetchError(
                            f"fetching image {url!r} failed: HTTP {response.status_code}"
                        )
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > policy.max_bytes:
                        raise ImageTooLargeError(
                            f"image at {url!r} is {declared} bytes, over the "
                            f"{policy.max_bytes}-byte limit"
                        )
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > policy.max_bytes:
                            raise ImageTooLargeError(
                                f"image at {url!r} is over the {policy.max_bytes}-byte limit"
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
    except httpx.TimeoutException as exc:
        raise ImageFetchError(
            f"fetching image {url!r} timed out after {policy.timeout_s} s"
        ) from exc
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"fetching image {url!r} failed: {exc}") from exc
    raise ImageFetchError(f"fetching image {url!r} failed: more than {MAX_REDIRECTS} redirects")
