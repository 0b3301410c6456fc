"""Fixtures shared by the core tests and every integration's tests."""

from __future__ import annotations

import os
from pathlib import Path

# Nothing in the test suite may download: no hub, no tiktoken fetches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# litellm fetches its model cost map on import unless told to use the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
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

import pytest  # noqa: E402

# No test reaches past this machine: a connection to an address that is not loopback
# fails the test (vlmguard_plugins.testing.offline).  `pytester` runs small test
# sessions, to test the suite's own rules (tests/test_architecture.py).
pytest_plugins = ["vlmguard_plugins.testing.offline", "pytester"]

REPO_ROOT = Path(__file__).parent


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
