"""Every image source the public API accepts, and every bad one it must refuse."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from vlmguard_plugins import ImageLimits, URLPolicy, load_image
from vlmguard_plugins.errors import (
    ImageDecodeError,
    ImageFetchError,
    ImageInputError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    URLPolicyError,
)
from vlmguard_plugins.images import load_images
from vlmguard_plugins.testing import ImageServer, Route


def png_bytes(size: tuple[int, int] = (40, 30), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def image_server() -> Iterator[str]:
    """An http server on 127.0.0.1 serving one PNG at /cat.png (and a redirect to it)."""
    routes = {
        "/cat.png": png_bytes((16, 16), "blue"),
        "/redirect": Route.redirect("http://169.254.169.254/latest/meta-data"),
    }
    with ImageServer(routes) as server:
        yield server.url


# --- every accepted form --------------------------------------------------------------


def test_path_string_and_pathlib(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((40, 30)))
    assert load_image(str(path)).size == (40, 30)
    assert load_image(path).size == (40, 30)


def test_bytes_pil_and_data_url() -> None:
    data = png_bytes((12, 8))
    assert load_image(data).size == (12, 8)
    assert load_image(bytearray(data)).size == (12, 8)
    assert load_image(Image.new("L", (5, 6))).image.mode == "RGB"
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert load_image(url).size == (12, 8)


def test_jpeg_and_webp_are_accepted() -> None:
    for fmt in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 10), "green").save(buffer, format=fmt)
        prepared = load_image(buffer.getvalue())
        assert prepared.source_format == fmt and prepared.size == (20, 10)


def test_http_url_fetched_when_allowed(image_server: str) -> None:
    policy = URLPolicy(allow_remote=True, allow_private_addresses=True)
    assert load_image(f"{image_server}/cat.png", url_policy=policy).size == (16, 16)


def test_data_url_encoding_is_memoised() -> None:
    prepared = load_image(png_bytes((600, 300)))
    first = prepared.data_url(max_side=200)
    assert prepared.data_url(max_side=200) is first
    decoded = Image.open(io.BytesIO(base64.b64decode(first.split(",", 1)[1])))
    assert decoded.size == (200, 100)


def test_hash_depends_on_content_only() -> None:
    assert load_image(png_bytes(color="red")).sha256 == load_image(png_bytes(color="red")).sha256
    assert load_image(png_bytes(color="red")).sha256 != load_image(png_bytes(color="blue")).sha256


# --- every bad input ------------------------------------------------------------------


def test_corrupt_bytes() -> None:
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        load_image(b"this is not an image at all")


def test_truncated_png() -> None:
    data = png_bytes((200, 200), "white")
    noisy = Image.effect_noise((200, 200), 80).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    data = buffer.getvalue()
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_refused_before_decoding() -> None:
    bomb = png_header_only(30_000, 30_000)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLargeError, match="decompression bomb|30000x30000"):
        load_image(bomb)


def test_byte_limit() -> None:
    with pytest.raises(ImageTooLargeError, match="byte limit"):
        load_image(png_bytes((64, 64)), limits=ImageLimits(max_bytes=100))


def test_unsupported_format() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="TIFF")
    with pytest.raises(UnsupportedImageFormatError, match="TIFF"):
        load_image(buffer.getvalue())


def test_file_url_refused() -> None:
    with pytest.raises(URLPolicyError, match="file://"):
        load_image("file:///etc/passwd")


def test_non_image_local_file_is_a_decode_error() -> None:
    with pytest.raises(ImageDecodeError):
        load_image("/etc/passwd")


def test_local_paths_refused_from_framework_input(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes())
    with pytest.raises(URLPolicyError, match="local file paths are not accepted"):
        load_image(str(path), allow_local_files=False)


def test_remote_fetching_off_by_default() -> None:
    with pytest.raises(URLPolicyError, match="remote image fetching is disabled"):
        load_image("https://example.com/cat.png")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:1/",
        "http://[::1]/x.png",
        "http://10.0.0.1/x.png",
    ],
)
def test_private_addresses_refused_even_when_remote_is_on(url: str) -> None:
    with pytest.raises(URLPolicyError, match="private, loopback or link-local"):
        load_image(url, url_policy=URLPolicy(allow_remote=True))


def test_redirect_is_rechecked_hop_by_hop(image_server: str) -> None:
    # The first hop is allow-listed; the redirect to the metadata address is not.
    policy = URLPolicy(
        allow_remote=True, allow_private_addresses=True, allowed_hosts=frozenset({"127.0.0.1"})
    )
    assert load_image(f"{image_server}/cat.png", url_policy=policy).size == (16, 16)
    with pytest.raises(URLPolicyError, match="169.254.169.254.*not allow-listed"):
        load_image(f"{image_server}/redirect", url_policy=policy)


def test_dead_server_is_a_fetch_error() -> None:
    policy = URLPolicy(allow_remote=True, allow_private_addresses=True, timeout_s=2)
    with pytest.raises(ImageFetchError, match="127.0.0.1:1"):
        load_image("http://127.0.0.1:1/", url_policy=policy)


def test_unsupported_scheme_and_type() -> None:
    with pytest.raises(URLPolicyError, match="only http"):
        load_image("ftp://example.com/a.png")
    with pytest.raises(ImageInputError, match="unsupported image source"):
        load_image(12345)


def test_too_many_images() -> None:
    with pytest.raises(ImageInputError, match="at most 2"):
        load_images([png_bytes()] * 3, limits=ImageLimits(max_images=2))


def test_errors_name_the_image_of_a_request() -> None:
    with pytest.raises(ImageDecodeError, match=r"image 2 of 3 \(from bytes\)"):
        load_images([png_bytes(), b"junk", png_bytes()])


def test_no_image_is_decoded_when_a_later_one_is_refused() -> None:
    # The first image would decode fine, but the request is refused before it is.
    with pytest.raises(ImageTooLargeError, match="2 of 2"):
        load_images([png_bytes(), png_header_only(30_000, 30_000)])


def test_a_decoded_webp_does_not_keep_its_decoder() -> None:
    # An opened WebP holds libwebp's canvases (12 bytes a pixel) while it lives.
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), "green").save(buffer, format="WEBP", lossless=True)
    prepared = load_image(buffer.getvalue())
    assert type(prepared.image) is Image.Image and prepared.image.mode == "RGB"
