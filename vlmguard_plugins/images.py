"""Load, validate and limit images once; encode them lazily, at most once per size.

Every image source the public API accepts ends up as a :class:`PreparedImage`: a
decoded RGB ``PIL.Image`` that passed the limits, with a content hash computed on
demand (for the cache) and data-URL encodings memoised (for remote backends).

Loading has two steps, so that no image of a request is decoded before all of them
passed the limits: :func:`open_images` reads every header (size, mode, format) and
checks the per-image limits and the request's decode budget; :meth:`OpenedImages.decode`
then decodes.  :func:`load_images` does both.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import math
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import (
    ImageDecodeError,
    ImageInputError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    URLPolicyError,
)
from .urls import URLPolicy, fetch_image_bytes

__all__ = [
    "DEFAULT_FORMATS",
    "ImageLimits",
    "OpenedImages",
    "PreparedImage",
    "load_image",
    "load_images",
    "open_images",
]

DEFAULT_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})

_MIB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to the images of one request before any of them is decoded.

    Per image: ``max_bytes`` (the encoded size), ``max_pixels`` and ``max_side`` (read
    from the header, so a decompression bomb is refused before any pixel is allocated).

    Per request (every image of every turn of a conversation counts): ``max_images``,
    ``max_total_pixels`` (the sum of width x height) and ``max_decoded_bytes`` (the
    memory the images take at the peak of decoding them, estimated from their headers:
    4 bytes a pixel for each decoded RGB image, plus the largest one's decoding buffers).
    These close the gap the per-image limits leave: a few kilobytes of one-colour PNG or
    WebP can declare tens of megapixels each.  The defaults fit eight 8-megapixel photos
    in any accepted format, or one 48-megapixel photo.

    Animated images (GIF, WebP, APNG) are refused unless ``allow_animated``: the
    rewriter reads one frame, and the model would receive the others unseen.  When
    allowed, they count as their first frame, the only one decoded.
    """

    max_bytes: int = 20 * _MIB
    max_pixels: int = 50_000_000
    max_side: int = 16_384
    max_images: int = 8
    formats: frozenset[str] = DEFAULT_FORMATS
    max_total_pixels: int = 64_000_000
    max_decoded_bytes: int = 384 * _MIB
    allow_animated: bool = False


@dataclass(eq=False)
class PreparedImage:
    """A validated, decoded image ready for any backend."""

    image: Image.Image
    source_format: str | None = None
    _raw: bytes | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)
    _encoded: dict[tuple[int | None, str], str] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def sha256(self) -> str:
        """Content hash (of the source bytes when known, else of the pixels)."""
        if self._digest is None:
            data = self._raw if self._raw is not None else self.image.tobytes()
            self._digest = hashlib.sha256(data).hexdigest()
        return self._digest

    def resized(self, max_side: int | None) -> Image.Image:
        """The image scaled down so its longest side is at most ``max_side``."""
        if max_side is None or max(self.image.size) <= max_side:
            return self.image
        scale = max_side / max(self.image.size)
        new_size = (
            max(1, round(self.image.width * scale)),
            max(1, round(self.image.height * scale)),
        )
        return self.image.resize(new_size, Image.Resampling.BICUBIC)

    def data_url(self, max_side: int | None = None, fmt: str | None = None) -> str:
        """A base64 ``data:`` URL of the image, computed once per (size, format).

        When the image needs no resizing and came as PNG, JPEG, WEBP or GIF bytes, the
        original bytes are used as they are: no re-encoding at all.  Otherwise it is
        encoded as ``fmt`` (PNG by default, with fast compression; JPEG is smaller for
        photographs).
        """
        key = (max_side, (fmt or "").upper())
        if key not in self._encoded:
            self._encoded[key] = self._build_data_url(max_side, fmt)
        return self._encoded[key]

    def _build_data_url(self, max_side: int | None, fmt: str | None) -> str:
        fits = max_side is None or max(self.image.size) <= max_side
        raw, source_format = self._raw, self.source_format or ""
        same_format = fmt is None or fmt.upper() == source_format
        if fits and raw is not None and source_format in _WEB_FORMATS and same_format:
            data, chosen = raw, source_format
        else:
            chosen = (fmt or "PNG").upper()
            buffer = io.BytesIO()
            options = {"compress_level": 1} if chosen == "PNG" else {"quality": 90}
            self.resized(max_side).save(buffer, format=chosen, **options)
            data = buffer.getvalue()
        mime = "image/jpeg" if chosen == "JPEG" else f"image/{chosen.lower()}"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_WEB_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})

# -- what decoding costs, from the header ---------------------------------------------

# Pillow keeps every multi-band mode in 32-bit pixels (RGB included), 16-bit modes in
# two bytes and the rest in one.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_RGB_BYTES_PER_PIXEL = 4
# Pillow decodes WebP through libwebp's animation decoder: two RGBA canvases and a copy
# of the frame as bytes, besides the image itself (measured peak for an RGB WebP: 16
# bytes a pixel, against 4 for an RGB PNG).
_WEBP_DECODER_BYTES_PER_PIXEL = 12
# Errors Pillow raises on malformed data, besides its own OSError subclasses.
_PILLOW_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


def _bytes_per_pixel(mode: str) -> int:
    return _BYTES_PER_PIXEL.get(mode, 4)


def _jpeg_coefficient_bytes(image: Image.Image) -> int:
    # libjpeg holds every DCT coefficient (2 bytes) of the whole image while it decodes
    # a progressive or multi-scan file; the header does not tell those from single-scan
    # ones, so it is always counted, per component at its chroma subsampling.
    width, height = image.size
    layers = getattr(image, "layer", None) or [(None, 1, 1, None)] * len(image.getbands())
    h_max = max(max(1, layer[1]) for layer in layers)
    v_max = max(max(1, layer[2]) for layer in layers)
    samples = sum(
        math.ceil(width * max(1, layer[1]) / h_max) * math.ceil(height * max(1, layer[2]) / v_max)
        for layer in layers
    )
    return 2 * samples


def _file_decode_cost(image: Image.Image) -> tuple[int, int]:
    """Bytes the decoded RGB image keeps, and bytes held only while it is decoded."""
    pixels = image.width * image.height
    transient = 0
    if image.mode != "RGB" or image.format == "WEBP":
        # The decoded source, alive until it is converted (or, for WebP, copied away
        # from the decoder that would otherwise stay attached to it).
        transient += pixels * _bytes_per_pixel(image.mode)
    if image.format == "WEBP":
        transient += pixels * _WEBP_DECODER_BYTES_PER_PIXEL
    elif image.format == "JPEG":
        transient += _jpeg_coefficient_bytes(image)
    return pixels * _RGB_BYTES_PER_PIXEL, transient


# -- opening: headers only -------------------------------------------------------------


@dataclass
class _Pending:
    """One image of a request, its header read and checked, not decoded yet."""

    label: str
    size: tuple[int, int]
    kept_bytes: int
    transient_bytes: int
    needs_decoding: bool
    # A PreparedImage, the caller's PIL image, or a lazily opened file; dropped once
    # decoded, so a decoder's buffers do not outlive its image.
    source: PreparedImage | Image.Image | None
    data: bytes | None = None

    def decode(self) -> PreparedImage:
        source, self.source = self.source, None
        if isinstance(source, PreparedImage):
            return source
        assert source is not None, "an image is decoded once"
        if self.data is None:  # the caller's own, already decoded, image
            rgb = source if source.mode == "RGB" else source.convert("RGB")
            return PreparedImage(image=rgb, source_format=source.format)
        return _decode_file(source, self.data, self.label)


def _decode_file(opened: Image.Image, data: bytes, label: str) -> PreparedImage:
    source_format = opened.format
    try:
        # Only the current (first) frame of an animated image is loaded and converted.
        opened.load()
        if opened.mode == "RGB" and source_format != "WEBP":
            image = opened
        else:
            # An opened WebP holds on to libwebp's canvases and the frame's bytes (12
            # bytes a pixel) for as long as it lives: keep a converted copy instead.
            image = opened.convert("RGB")
    except _PILLOW_DATA_ERRORS as exc:
        raise ImageDecodeError(f"image {label} could not be decoded: {exc}") from exc
    return PreparedImage(image=image, source_format=source_format, _raw=data)


def _open_bytes(data: bytes, limits: ImageLimits, label: str) -> _Pending:
    if len(data) == 0:
        raise ImageDecodeError(f"image {label} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"image {label} is {len(data)} bytes, over the {limits.max_bytes}-byte limit"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image {label} is a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"image {label} is not a readable image (corrupt data or not an image at all)"
        ) from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise ImageDecodeError(f"image {label} could not be decoded: {exc}") from exc
    _check_header(opened, limits, label)
    kept, transient = _file_decode_cost(opened)
    return _Pending(label, opened.size, kept, transient, True, opened, data)


def _check_header(image: Image.Image, limits: ImageLimits, label: str) -> None:
    if image.format not in limits.formats:
        allowed = ", ".join(sorted(limits.formats))
        raise UnsupportedImageFormatError(
            f"image {label} is in format {image.format or 'unknown'}; accepted formats: {allowed}"
        )
    # is_animated looks for a second frame only; n_frames would walk every frame.
    if not limits.allow_animated and getattr(image, "is_animated", False):
        raise UnsupportedImageFormatError(
            f"image {label} is animated: the guard reads one frame, so the others would reach "
            "the model unseen; send a still image, or set the allow_animated_images setting "
            "(ImageLimits.allow_animated) to accept animations judged by their first frame"
        )
    _check_size(image.size, limits, label)


def _check_size(size: tuple[int, int], limits: ImageLimits, label: str) -> None:
    width, height = size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageTooLargeError(
            f"image {label} is {width}x{height} pixels, over the limit of "
            f"{limits.max_pixels} pixels / {limits.max_side} per side (raise the "
            "max_image_pixels / max_image_side settings, ImageLimits.max_pixels / "
            "max_side, to accept it)"
        )


def _open_pil(image: Image.Image, limits: ImageLimits, label: str) -> _Pending:
    _check_size(image.size, limits, label)
    pixels = image.width * image.height
    return _Pending(label, image.size, pixels * _RGB_BYTES_PER_PIXEL, 0, image.mode != "RGB", image)


def _open_prepared(prepared: PreparedImage, label: str) -> _Pending:
    width, height = prepared.size
    return _Pending(label, prepared.size, width * height * _RGB_BYTES_PER_PIXEL, 0, False, prepared)


def _open_data_url(url: str, limits: ImageLimits, label: str) -> _Pending:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header.lower():
        raise ImageDecodeError(
            "data: URL images must be base64 encoded (data:image/...;base64,...)"
        )
    if len(payload) > limits.max_bytes * 4 // 3 + 4:
        raise ImageTooLargeError(f"data: URL image is over the {limits.max_bytes}-byte limit")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"data: URL image has invalid base64: {exc}") from exc
    return _open_bytes(data, limits, label)


def _open_path(path: Path, limits: ImageLimits, label: str) -> _Pending:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageInputError(f"image file {str(path)!r} cannot be read: {exc.strerror}") from exc
    if not path.is_file():
        raise ImageInputError(f"image path {str(path)!r} is not a file")
    if size > limits.max_bytes:
        raise ImageTooLargeError(
            f"image file {str(path)!r} is {size} bytes, over the {limits.max_bytes}-byte limit"
        )
    return _open_bytes(path.read_bytes(), limits, label)


def _open_local(
    path: Path, allow_local_files: bool, limits: ImageLimits, label: Callable[[str], str]
) -> _Pending:
    if not allow_local_files:
        raise URLPolicyError(
            f"refused image source {str(path)!r}: local file paths are not accepted from "
            "this input, since message content must not make the guard read local files; "
            "send the image as base64 data or a data: URL (code you control can pass a path "
            "with RewriteRequest(allow_local_files=True), or allow_local_files=True on the "
            "LlamaIndex adapters)"
        )
    return _open_path(path, limits, label(repr(str(path))))


def _open_one(
    source: Any,
    limits: ImageLimits,
    url_policy: URLPolicy,
    allow_local_files: bool,
    label: Callable[[str], str],
) -> _Pending:
    if isinstance(source, PreparedImage):
        return _open_prepared(source, label("given as PreparedImage"))
    if isinstance(source, Image.Image):
        return _open_pil(source, limits, label("given as PIL image"))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(source), limits, label("from bytes"))
    if isinstance(source, Path):
        return _open_local(source, allow_local_files, limits, label)
    if isinstance(source, str):
        text = source.strip()
        lowered = text[:16].lower()
        if lowered.startswith("data:"):
            return _open_data_url(text, limits, label("from data: URL"))
        if "://" in text[:16]:
            data = fetch_image_bytes(text, url_policy)
            return _open_bytes(data, limits, label(repr(text)))
        return _open_local(Path(text), allow_local_files, limits, label)
    raise ImageInputError(
        f"unsupported image source of type {type(source).__name__}; pass a path, bytes, "
        "a PIL image, a data: URL or an http(s) URL"
    )


class OpenedImages:
    """The images of one request: headers read and every limit checked, none decoded.

    Built by :func:`open_images`.  Reading headers is cheap whatever the image, so a
    caller can look at :attr:`pixels_to_decode` to choose where :meth:`decode` runs
    (on an event loop, or in a thread).

    Attributes:
        total_pixels: the sum of width x height over the images (each animation's
            first frame).
        pixels_to_decode: the pixels that decoding or converting goes through: its cost.
        decoded_bytes: the estimated peak memory of decoding the images one after
            another: every decoded RGB image is kept, while a decoder's own buffers (the
            source mode's pixels, libwebp's canvases, libjpeg's coefficients) live only
            as long as its image is being decoded.
    """

    def __init__(self, pending: list[_Pending]) -> None:
        self._pending = pending
        self._decoded: list[PreparedImage] | None = None
        self.total_pixels = self.pixels_to_decode = kept = transient = 0
        for item in pending:
            pixels = item.size[0] * item.size[1]
            self.total_pixels += pixels
            self.pixels_to_decode += pixels if item.needs_decoding else 0
            kept += item.kept_bytes
            transient = max(transient, item.transient_bytes)
        self.decoded_bytes = kept + transient

    def __len__(self) -> int:
        return len(self._pending)

    def decode(self) -> list[PreparedImage]:
        """Decode every image (once; later calls return the same list), in order.

        Raises:
            ImageDecodeError: an image's data is corrupt or truncated.
        """
        if self._decoded is None:
            self._decoded = [item.decode() for item in self._pending]
        return self._decoded


def _check_budget(opened: OpenedImages, limits: ImageLimits) -> None:
    if opened.total_pixels > limits.max_total_pixels:
        raise ImageTooLargeError(
            f"the request's images ({_count(opened)}) total {opened.total_pixels:,} pixels, "
            f"over the limit of {limits.max_total_pixels:,} pixels per request (raise the "
            "max_total_image_pixels setting, ImageLimits.max_total_pixels, to accept them)"
        )
    if opened.decoded_bytes > limits.max_decoded_bytes:
        raise ImageTooLargeError(
            f"the request's images ({_count(opened)}) would take about "
            f"{math.ceil(opened.decoded_bytes / _MIB):,} MiB of memory once decoded, over "
            f"the limit of {limits.max_decoded_bytes / _MIB:,.0f} MiB per request (raise "
            "the max_decoded_image_bytes setting, ImageLimits.max_decoded_bytes, to accept "
            "them)"
        )


def _count(opened: OpenedImages) -> str:
    return f"{len(opened)} image" + ("" if len(opened) == 1 else "s")


def _positioned(label: str, *, index: int, count: int) -> str:
    # In a request of several images, a message says which one: "image 2 of 3 (...)".
    return label if count == 1 else f"{index + 1} of {count} ({label})"


def _open_all(
    sources: Sequence[Any],
    limits: ImageLimits,
    url_policy: URLPolicy,
    allow_local_files: bool,
) -> OpenedImages:
    pending = []
    for index, source in enumerate(sources):
        label = functools.partial(_positioned, index=index, count=len(sources))
        pending.append(_open_one(source, limits, url_policy, allow_local_files, label))
    opened = OpenedImages(pending)
    _check_budget(opened, limits)
    return opened


def open_images(
    sources: Sequence[Any],
    *,
    limits: ImageLimits | None = None,
    url_policy: URLPolicy | None = None,
    allow_local_files: bool = True,
) -> OpenedImages:
    """Read and check the headers of a request's images, without decoding any of them.

    Every per-image limit and the request's decode budget (``max_images``,
    ``max_total_pixels``, ``max_decoded_bytes``) are checked here, so a request over
    them never allocates its pixels.  Sources as for :func:`load_image`; fetching a URL
    or reading a file happens here too.

    Raises:
        ImageInputError: or one of its subclasses, with a message naming the problem
            (and, for a limit, the setting that raises it).
    """
    limits = limits or ImageLimits()
    if len(sources) > limits.max_images:
        raise ImageInputError(
            f"{len(sources)} images given; at most {limits.max_images} per request are accepted"
        )
    return _open_all(sources, limits, url_policy or URLPolicy(), allow_local_files)


def load_image(
    source: Any,
    *,
    limits: ImageLimits | None = None,
    url_policy: URLPolicy | None = None,
    allow_local_files: bool = True,
) -> PreparedImage:
    """Turn any accepted image source into a validated :class:`PreparedImage`.

    Accepted: ``PreparedImage``, ``PIL.Image.Image``, ``bytes``/``bytearray``, a
    ``data:`` URL, an http(s) URL (per ``url_policy``), a path (``str`` or
    ``pathlib.Path``; only when ``allow_local_files``).  The image is checked against
    every limit, the per-request ones included, before it is decoded.

    Raises:
        ImageInputError: or one of its subclasses, with a message naming the problem.
    """
    if isinstance(source, PreparedImage):
        return source
    opened = _open_all(
        [source], limits or ImageLimits(), url_policy or URLPolicy(), allow_local_files
    )
    return opened.decode()[0]


def load_images(
    sources: Sequence[Any],
    *,
    limits: ImageLimits | None = None,
    url_policy: URLPolicy | None = None,
    allow_local_files: bool = True,
) -> list[PreparedImage]:
    """Load a request's images: :func:`open_images`, then decode them.

    No image is decoded unless all of them passed the limits.
    """
    return open_images(
        sources, limits=limits, url_policy=url_policy, allow_local_files=allow_local_files
    ).decode()
