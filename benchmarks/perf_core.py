"""Core rewriter benchmark: batched vs sequential on the tiny model, and the core's own overhead.

Run: .venv/bin/python benchmarks/perf_core.py
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from unittest import mock

from PIL import Image

from vlmguard_plugins import Rewriter, load_image
from vlmguard_plugins.backends.transformers import TransformersBackend
from vlmguard_plugins.examples_assets import draw_example_images
from vlmguard_plugins.testing import ScriptedBackend, make_tiny_model

N_CONCURRENT = 16


async def batched_vs_sequential(model_dir: str) -> None:
    backend = TransformersBackend(model_dir, max_batch_size=N_CONCURRENT, max_wait_ms=20)
    rewriter = Rewriter(backend=backend, max_new_tokens=32, max_concurrency=N_CONCURRENT)
    image = Image.new("RGB", (224, 224), "orange")
    texts = [f"What is shown here? ({i})" for i in range(N_CONCURRENT)]
    await rewriter.arewrite("warm-up", images=[image])

    started = time.perf_counter()
    for text in texts:
        await rewriter.arewrite(text, images=[image])
    sequential = time.perf_counter() - started

    started = time.perf_counter()
    await asyncio.gather(*(rewriter.arewrite(text, images=[image]) for text in texts))
    batched = time.perf_counter() - started
    sizes = backend.batcher.batch_sizes[-4:]
    print(f"tiny model, {N_CONCURRENT} rewrites x 32 new tokens, one 224x224 image each")
    print(f"  one at a time : {sequential:6.2f} s  ({N_CONCURRENT / sequential:5.1f} rewrites/s)")
    print(
        f"  concurrent    : {batched:6.2f} s  ({N_CONCURRENT / batched:5.1f} rewrites/s), "
        f"last batch sizes {sizes}"
    )
    print(f"  speed-up      : {sequential / batched:5.1f}x")


def _scene() -> Image.Image:
    """A drawn 1024x1024 scene (flat areas and edges, like a photo of an object)."""
    with tempfile.TemporaryDirectory() as folder:
        path = draw_example_images(folder)["knife"]
        return Image.open(path).convert("RGB").resize((1024, 1024), Image.Resampling.BICUBIC)


def _noise() -> Image.Image:
    """Random noise: the worst case for PNG coding."""
    return Image.effect_noise((1024, 1024), 40).convert("RGB")


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _decode_ms(data: bytes) -> float:
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        Image.open(io.BytesIO(data)).load()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def core_overhead() -> None:
    def remote_like(request):  # encodes the image as a remote backend would, twice
        for image in request.images:
            image.data_url(max_side=1024)
            image.data_url(max_side=1024)
        return ScriptedBackend.echo_unchanged(request)

    scene, noise = _scene(), _noise()
    inputs = {
        "PIL.Image (scene)": scene,
        "PNG bytes (scene)": _encode(scene, "PNG"),
        "JPEG bytes (scene)": _encode(scene, "JPEG"),
        "PNG bytes (noise)": _encode(noise, "PNG"),
        "JPEG bytes (noise)": _encode(noise, "JPEG"),
    }
    print("\ncore overhead per call, zero-latency backend, one 1024x1024 image (median of 50)")
    for label, source in inputs.items():
        for encodes in (False, True):
            backend = ScriptedBackend(responder=remote_like) if encodes else ScriptedBackend()
            rewriter = Rewriter(backend=backend)
            timings = []
            with mock.patch.object(Image, "open", wraps=Image.open) as opened:
                for _ in range(50):
                    started = time.perf_counter()
                    await rewriter.arewrite("What is in this picture?", images=[source])
                    timings.append((time.perf_counter() - started) * 1000)
            what = "+ data-URL encode" if encodes else "no encode        "
            decode = _decode_ms(source) if isinstance(source, bytes) else 0.0
            print(
                f"  {label:19s} {what}: {statistics.median(timings):7.2f} ms/call "
                f"(Pillow decode alone {decode:5.2f} ms), "
                f"decodes per call: {opened.call_count / 50:.0f}"
            )
    prepared = load_image(inputs["PNG bytes (scene)"])
    prepared.data_url(max_side=1024)
    started = time.perf_counter()
    prepared.data_url(max_side=1024)
    print(
        f"  a second data_url() of the same image: {(time.perf_counter() - started) * 1e6:.1f} us "
        "(memoised: encoded once)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        make_tiny_model(folder)
        asyncio.run(batched_vs_sequential(folder))
    asyncio.run(core_overhead())


if __name__ == "__main__":
    main()
