"""The request's decode budget: memory amplification from tiny images is refused unread.

A few kilobytes of one-colour PNG or WebP can declare tens of megapixels each.  The
per-image limits let each of them through; the budget over a request's images (every
turn of a conversation) refuses them from their headers, before any is decoded.  The
hostile images are built here, byte by byte, so nothing binary is committed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmguard_plugins import ImageLimits, Rewriter, RewriterSettings, load_image
from vlmguard_plugins.conversation import from_openai
from vlmguard_plugins.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
)
from vlmguard_plugins.images import OpenedImages, PreparedImage, load_images, open_images
from vlmguard_plugins.testing import ScriptedBackend

MIB = 1024 * 1024

# --- hostile images, built in the test ------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_colour_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG: 7000x7000 pixels in about 6 KB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = bytes((1 + (width + 7) // 8) * height)  # filter byte 0, then all-zero pixels
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows, 9))
        + _png_chunk(b"IEND", b"")
    )


def png_header(width: int, height: int, colour_type: int = 2) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds almost no data (truncated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    plte = _png_chunk(b"PLTE", bytes(3)) if colour_type == 3 else b""
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + plte + idat


def one_colour_webp(width: int, height: int, rgb: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    """A lossless WebP of one colour, any size up to 16384x16384, in 32 bytes.

    Every prefix code has a single symbol, so each pixel takes zero bits: the same
    bitstream decodes to any size the header declares.
    """
    bits: list[int] = []

    def put(value: int, count: int) -> None:
        bits.extend((value >> i) & 1 for i in range(count))

    put(width - 1, 14)
    put(height - 1, 14)
    put(0, 4)  # no alpha, version 0
    put(0, 3)  # no transform, no colour cache, no meta prefix codes
    for value in (rgb[1], rgb[0], rgb[2], 255):  # green, red, blue, alpha
        put(0b101, 3)  # a simple code of one 8-bit symbol
        put(value, 8)
    put(0b0001, 4)  # distance: a simple code of one 1-bit symbol, 0
    payload = bytearray(b"\x2f")
    payload += bytes(
        sum(b << j for j, b in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8)
    )
    payload += b"\x00" * (len(payload) % 2)
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + bytes(payload)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def many_frame_gif(width: int, height: int, frames: int) -> bytes:
    """An animated GIF: frame 0 paints pixel (0, 0) red, each later frame paints it green.

    Decoding every frame composes each onto an RGB canvas of ``width`` x ``height``.
    """
    palette = bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])  # black, red, green, blue
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x81, 0, 0) + palette)
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for index in range(frames):
        colour = 1 if index == 0 else 2
        lzw = struct.pack("<H", 4 | colour << 3 | 5 << 6)  # 3-bit codes: clear, colour, end
        out += b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02" + lzw + b"\x00"
    return bytes(out + b"\x3b")


def jpeg_header(width: int, height: int, **options: object) -> bytes:
    """A small JPEG whose frame header is rewritten to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "gray").save(buffer, format="JPEG", **options)
    data = bytearray(buffer.getvalue())
    at = 2  # after SOI, walk the marker segments to the frame header (SOF0 or SOF2)
    while data[at + 1] not in (0xC0, 0xC2):
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# Four distinct images (a defence that decodes a repeated image once must still refuse).
HOSTILE = [
    one_colour_webp(7000, 7000),
    one_colour_png(7000, 7000),
    one_colour_webp(7000, 6999),
    one_colour_png(7000, 6999),
]


def test_hostile_images_are_tiny_and_each_within_the_per_image_limit() -> None:
    limits = ImageLimits()
    for data in HOSTILE:
        assert len(data) < 10_000
        with Image.open(io.BytesIO(data)) as image:
            assert image.width * image.height > 48_000_000
            assert image.width * image.height <= limits.max_pixels


# --- refused from the headers -----------------------------------------------------------


def test_many_large_images_are_refused_by_the_total_pixel_budget() -> None:
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="max_total_image_pixels") as caught:
        load_images(HOSTILE)
    assert time.perf_counter() - started < 2.0  # headers only: nothing was decoded
    assert "(4 images) total 195,986,000 pixels" in str(caught.value)
    assert "limit of 64,000,000 pixels per request" in str(caught.value)


def test_one_webp_that_would_take_a_gigabyte_is_refused_by_the_memory_budget() -> None:
    # 49 Mpx fit both pixel limits; libwebp's canvases make it ~20 bytes a pixel.
    with pytest.raises(ImageTooLargeError, match="max_decoded_image_bytes") as caught:
        load_image(one_colour_webp(7000, 7000))
    assert "MiB" in str(caught.value)


def test_image_over_the_per_image_limit_names_the_setting() -> None:
    with pytest.raises(ImageTooLargeError, match="7000x7500.*max_image_pixels"):
        load_image(one_colour_png(7000, 7500))


def test_budget_limits_are_configurable() -> None:
    small = [one_colour_png(1000, 1000)] * 3
    assert len(load_images(small)) == 3
    with pytest.raises(ImageTooLargeError, match="max_total_image_pixels"):
        load_images(small, limits=ImageLimits(max_total_pixels=2_999_999))
    with pytest.raises(ImageTooLargeError, match="max_decoded_image_bytes"):
        load_images(small, limits=ImageLimits(max_decoded_bytes=10 * MIB))
    opened = open_images([one_colour_webp(7000, 7000)], limits=ImageLimits(max_decoded_bytes=2**40))
    assert opened.total_pixels == 49_000_000  # opened, not decoded


def test_settings_carry_the_budget_and_share_the_defaults() -> None:
    defaults, settings = ImageLimits(), RewriterSettings(backend="openai", model="m")
    assert settings.image_limits() == defaults
    limits = RewriterSettings(
        backend="openai", model="m", max_total_image_pixels=5, max_decoded_image_bytes=7
    ).image_limits()
    assert (limits.max_total_pixels, limits.max_decoded_bytes) == (5, 7)


@pytest.mark.parametrize(
    "photo",
    [
        jpeg_header(3264, 2448),
        jpeg_header(3264, 2448, progressive=True, subsampling=0),
        one_colour_webp(3264, 2448),
        png_header(3264, 2448, colour_type=6),  # RGBA
        png_header(3264, 2448, colour_type=3),  # palette
        many_frame_gif(3264, 2448, 1),
    ],
    ids=["jpeg", "progressive-jpeg-444", "webp", "png-rgba", "png-palette", "gif"],
)
def test_defaults_fit_eight_8_megapixel_photos_in_any_format(photo: bytes) -> None:
    opened = open_images([photo] * 8)  # headers only
    assert opened.total_pixels == 8 * 3264 * 2448


def test_defaults_fit_one_48_megapixel_photo() -> None:
    assert open_images([jpeg_header(8000, 6000)]).total_pixels == 48_000_000


def test_truncated_image_with_a_huge_declared_size_is_a_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        load_image(png_header(7000, 7000))
    with pytest.raises(ImageTooLargeError, match="max_total_image_pixels"):
        load_images([png_header(7000, 7000)] * 2)  # two are refused before decoding


# --- animations: the first frame only ---------------------------------------------------


def test_animated_gif_decodes_its_first_frame_only() -> None:
    gif = many_frame_gif(2000, 2000, 20_000)  # every frame decoded: ~20000 canvas copies
    started = time.perf_counter()
    prepared = load_image(gif, limits=ImageLimits(allow_animated=True))
    assert time.perf_counter() - started < 5.0
    assert prepared.size == (2000, 2000)
    assert prepared.image.getpixel((0, 0)) == (255, 0, 0)  # frame 0, not a later frame


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_animated_images_give_their_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "lime", "blue")]
    buffer = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], **options)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert getattr(image, "n_frames", 1) == 3
    allowed = ImageLimits(allow_animated=True)
    assert load_image(buffer.getvalue(), limits=allowed).image.getpixel((5, 5)) == (255, 0, 0)
    # By default the other frames would reach the model unseen: refused.
    with pytest.raises(UnsupportedImageFormatError, match="animated"):
        load_image(buffer.getvalue())


# --- through the rewriter and the conversation guard ---------------------------------


def test_arewrite_sends_the_refusal_to_the_failure_policy() -> None:
    backend = ScriptedBackend()
    rewriter = Rewriter(backend=backend)
    result = asyncio.run(rewriter.arewrite("What is this?", images=HOSTILE))
    assert result.action == "shield" and result.risk is None
    assert "ImageTooLargeError" in (result.fallback or "")
    assert backend.calls == []
    with pytest.raises(ImageTooLargeError):
        asyncio.run(rewriter.arewrite("What is this?", images=HOSTILE, on_error="raise"))


def test_aguard_raises_and_counts_the_images_of_earlier_turns() -> None:
    webp, png = one_colour_webp(1000, 1000), one_colour_png(1000, 1000)
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(webp, "image/webp")}},
                {"type": "text", "text": "What is this?"},
            ],
        },
        {"role": "assistant", "content": "A red square."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(png)}},
                {"type": "text", "text": "And this?"},
            ],
        },
    ]
    backend = ScriptedBackend()
    limits = ImageLimits(max_total_pixels=1_500_000)
    rewriter = Rewriter(backend=backend, on_error="passthrough", image_limits=limits)
    # The last turn alone fits (1 Mpx); with the first turn's image it is 2 Mpx.
    assert asyncio.run(rewriter.aguard(from_openai(messages[2:]))).result is not None
    with pytest.raises(ImageTooLargeError, match="2 images.*max_total_image_pixels"):
        asyncio.run(rewriter.aguard(from_openai(messages)))
    assert len(backend.calls) == 1


def test_decoding_runs_off_the_event_loop_when_the_pixels_are_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    decode = OpenedImages.decode

    def recording(self: OpenedImages) -> list[PreparedImage]:
        threads.append(threading.get_ident())
        return decode(self)

    monkeypatch.setattr(OpenedImages, "decode", recording)
    rewriter = Rewriter(backend=ScriptedBackend())

    async def main() -> int:
        small = one_colour_png(64, 64)
        large = one_colour_png(1200, 1200)  # 1.44 Mpx in a few hundred bytes
        assert len(large) < 48 * 1024
        await rewriter.arewrite("small", images=[small])
        await rewriter.arewrite("large", images=[large])
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[0] == loop_thread  # a small image keeps the fast path
    assert threads[1] != loop_thread


# --- memory, measured in a child process --------------------------------------------

_CHILD = """
import asyncio, json, re, sys, time
from pathlib import Path
from PIL import Image
from vlmguard_plugins import Rewriter
from vlmguard_plugins.images import open_images
from vlmguard_plugins.testing import ScriptedBackend

def status(field):  # in bytes; VmHWM is this process's peak since exec (ru_maxrss is not)
    found = re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())
    return int(found[1]) * 1024

Image.init()  # import every format plugin before measuring
images = [Path(p).read_bytes() for p in sys.argv[2:]]
rewriter = Rewriter(backend=ScriptedBackend(), on_error="raise")
before = status("VmRSS")
started, error, estimate = time.perf_counter(), None, None
try:
    if sys.argv[1] == "rewrite":
        asyncio.run(rewriter.arewrite("What is this?", images=images))
    else:
        opened = open_images(images)
        estimate = opened.decoded_bytes
        opened.decode()
except Exception as exc:
    error = type(exc).__name__
print(json.dumps({"growth": status("VmHWM") - before, "seconds": time.perf_counter() - started,
                  "error": error, "estimate": estimate}))
"""


def _measure(tmp_path: Path, how: str, images: list[bytes]) -> dict[str, Any]:
    """Run ``_CHILD`` on ``images``: its memory growth (bytes), time and error."""
    paths = []
    for index, data in enumerate(images):
        path = tmp_path / f"image{index}"
        path.write_bytes(data)
        paths.append(str(path))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, how, *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="measures memory through /proc"
)


@needs_proc
def test_hostile_request_is_refused_with_little_memory_and_time(tmp_path: Path) -> None:
    # Before the budget, these four images (12 KB in all) were accepted: 1.5 GB, 4 s.
    measured = _measure(tmp_path, "rewrite", HOSTILE)
    assert measured["error"] == "ImageTooLargeError"
    assert measured["growth"] < 50 * MIB
    assert measured["seconds"] < 2.0


@needs_proc
def test_truncated_image_with_a_huge_declared_size_takes_little_memory(tmp_path: Path) -> None:
    measured = _measure(tmp_path, "rewrite", [png_header(7000, 7000)])
    assert measured["error"] == "ImageDecodeError"
    assert measured["growth"] < 300 * MIB


def _progressive_jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "gray").save(buffer, format="JPEG", progressive=True)
    return buffer.getvalue()


@needs_proc
@pytest.mark.parametrize(
    "build", [one_colour_webp, one_colour_png, _progressive_jpeg], ids=["webp", "png", "jpeg"]
)
def test_the_memory_estimate_bounds_what_decoding_takes(
    tmp_path: Path, build: Callable[[int, int], bytes]
) -> None:
    measured = _measure(tmp_path, "load", [build(3000, 3000)])
    assert measured["error"] is None
    kept = 3000 * 3000 * 4  # the decoded RGB image is really there: the measure works
    assert 0.9 * kept < measured["growth"] <= measured["estimate"] + 16 * MIB
