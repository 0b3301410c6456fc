"""Loaders for the published benchmark files: one module per benchmark.

Each loader reads a data folder laid out as the benchmark publishes it and returns a
:class:`BenchmarkData`: inspect ``Sample`` objects (image + text, a category, the
fields a judge needs) and the list of image files that are missing.
"""

from __future__ import annotations

from .common import BenchmarkData, MissingImagesPolicy, require_images
from .figstep import FIGSTEP_PROMPT, load_figstep
from .mm_safetybench import MMSB_IMAGE_KINDS, load_mm_safetybench
from .mmvet import load_mmvet
from .siuo import load_siuo
from .vlguard import VLGUARD_SUBSETS, load_vlguard

__all__ = [
    "FIGSTEP_PROMPT",
    "MMSB_IMAGE_KINDS",
    "VLGUARD_SUBSETS",
    "BenchmarkData",
    "MissingImagesPolicy",
    "load_figstep",
    "load_mm_safetybench",
    "load_mmvet",
    "load_siuo",
    "load_vlguard",
    "require_images",
]
