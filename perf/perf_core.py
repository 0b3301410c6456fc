"""Core rewriter benchmark on the tiny model: batched vs sequential, a lone request through
the batcher vs a direct generate, decode tokens of the ``<unchanged/>`` marker vs a copy,
and the core's own overhead.

Run: .venv/bin/python perf/perf_core.py [batched] [lone] [tokens] [overhead]
(all parts when none is named).
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import tempfile
import time
from unittest import mock

from PIL import Image

from vlmguard_plugins import Rewriter, Risk, load_image
from vlmguard_plugins.backends import GenerationRequest
from vlmguard_plugins.backends.transformers import TransformersBackend
from vlmguard_plugins.examples_assets import draw_example_images
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.prompts import build_messages
from vlmguard_plugins.testing import ScriptedBackend, make_tiny_model

N_CONCURRENT = 16
BATCH_ROUNDS = 7
LONE_ROUNDS = 9
LONE_CALLS = 20
BENIGN_PROMPT_TOKENS = (20, 200, 2000)


async def batched_vs_sequential(model_dir: str, rounds: int = BATCH_ROUNDS) -> None:
    """One-at-a-time and concurrent runs alternate, ``rounds`` times; the figures are the
    medians over rounds (a round's ratio pairs two runs taken under the same load)."""
    backend = TransformersBackend(model_dir, max_batch_size=N_CONCURRENT)
    rewriter = Rewriter(backend=backend, max_new_tokens=32, max_concurrency=N_CONCURRENT)
    image = Image.new("RGB", (224, 224), "orange")
    texts = [f"What is shown here? ({i})" for i in range(N_CONCURRENT)]
    await rewriter.arewrite("warm-up", images=[image])

    async def one_at_a_time() -> float:
        started = time.perf_counter()
        for text in texts:
            await rewriter.arewrite(text, images=[image])
        return time.perf_counter() - started

    async def concurrent() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(rewriter.arewrite(text, images=[image]) for text in texts))
        return time.perf_counter() - started

    sequential_runs, batched_runs, ratios = [], [], []
    for index in range(rounds):
        # Alternate which goes first so that a drift in load does not favour one side.
        if index % 2:
            batched = await concurrent()
            sequential = await one_at_a_time()
        else:
            sequential = await one_at_a_time()
            batched = await concurrent()
        sequential_runs.append(sequential)
        batched_runs.append(batched)
        ratios.append(sequential / batched)
    sequential = statistics.median(sequential_runs)
    batched = statistics.median(batched_runs)
    sizes = backend.batcher.batch_sizes[-4:]
    print(
        f"tiny model, {N_CONCURRENT} rewrites x 32 new tokens, one 224x224 image each "
        f"(medians of {rounds} interleaved rounds)"
    )
    print(f"  one at a time : {sequential:6.2f} s  ({N_CONCURRENT / sequential:5.1f} rewrites/s)")
    print(
        f"  concurrent    : {batched:6.2f} s  ({N_CONCURRENT / batched:5.1f} rewrites/s), "
        f"last batch sizes {sizes}"
    )
    print(
        f"  speed-up      : {statistics.median(ratios):5.1f}x "
        f"(rounds {min(ratios):.1f}x to {max(ratios):.1f}x)"
    )


async def lone_request(model_dir: str) -> None:
    """A lone request through the batcher vs the same generate called directly.

    Each round alternates the two call by call (and swaps which goes first), so drift
    in the machine's load falls on both; a round's ratio is the median of its paired
    ratios, and the figures are medians over the rounds.
    """
    backend = TransformersBackend(model_dir, max_batch_size=N_CONCURRENT)
    image = load_image(Image.new("RGB", (224, 224), "orange"))
    request = GenerationRequest(
        messages=build_messages("What is shown here?", [image]), max_new_tokens=16
    )
    for _ in range(3):  # warm-up: first calls allocate and compile kernels
        backend.generate_batch([request])
        await backend.agenerate(request)

    async def batched() -> float:
        started = time.perf_counter()
        await backend.agenerate(request)
        return time.perf_counter() - started

    async def direct() -> float:
        started = time.perf_counter()
        backend.generate_batch([request])
        return time.perf_counter() - started

    direct_medians, batched_medians, ratios = [], [], []
    for round_ in range(LONE_ROUNDS):
        pairs = []
        for call in range(LONE_CALLS):
            if (round_ + call) % 2:
                b, d = await batched(), await direct()
            else:
                d, b = await direct(), await batched()
            pairs.append((d, b))
        direct_medians.append(statistics.median(d for d, _ in pairs))
        batched_medians.append(statistics.median(b for _, b in pairs))
        ratios.append(statistics.median(b / d for d, b in pairs))
    print(
        f"\nlone request, tiny model, 16 new tokens, one 224x224 image "
        f"(medians of {LONE_ROUNDS} rounds of {LONE_CALLS} interleaved pairs)"
    )
    print(f"  direct generate_batch   : {statistics.median(direct_medians) * 1000:7.2f} ms")
    print(f"  through the batcher     : {statistics.median(batched_medians) * 1000:7.2f} ms")
    print(
        f"  ratio batcher / direct  : {statistics.median(ratios):6.3f} "
        f"(rounds {min(ratios):.3f} to {max(ratios):.3f}); batch sizes "
        f"{sorted(set(backend.batcher.batch_sizes))}"
    )


def benign_decode_tokens(model_dir: str) -> None:
    """Decode tokens a benign answer costs: the ``<unchanged/>`` marker vs a copy of the text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    analysis = (
        "textual: a plain question about the picture\nvisual: an everyday object\n"
        "cross-modal: no added risk"
    )
    words = "what is shown in this picture and how do I use it safely at home today "
    pool = tokenizer(words * 400).input_ids
    print("\ndecode tokens per benign answer (tiny model's tokenizer, analysis included)")
    print("  prompt tokens | copy of the text | <unchanged/> | saved")
    for size in BENIGN_PROMPT_TOKENS:
        text = str(tokenizer.decode(pool[:size])).strip()
        prompt_tokens = len(tokenizer(text).input_ids)
        copy = len(tokenizer(format_output(analysis, Risk.NONE, text)).input_ids)
        marker = len(tokenizer(format_output(analysis, Risk.NONE, None)).input_ids)
        print(
            f"  {prompt_tokens:13d} | {copy:16d} | {marker:12d} | {copy - marker:5d} "
            f"({1 - marker / copy:.0%})"
        )


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
    only = set(sys.argv[1:])  # e.g. `lone tokens`: run only those parts
    with tempfile.TemporaryDirectory() as folder:
        make_tiny_model(folder)
        if not only or "batched" in only:
            asyncio.run(batched_vs_sequential(folder))
        if not only or "lone" in only:
            asyncio.run(lone_request(folder))
        if not only or "tokens" in only:
            benign_decode_tokens(folder)
    if not only or "overhead" in only:
        asyncio.run(core_overhead())


if __name__ == "__main__":
    main()
