"""Make a rewriter: three-stage data synthesis, supervised fine-tuning and GRPO.

``vlmguard train synth`` turns (image, instruction, safe response, unsafe response)
records into training samples in the rewriter's own chat format, with a teacher
model running the three stages (hindsight analysis, multimodal causal analysis,
prompt optimisation).  ``vlmguard train sft`` fine-tunes a Qwen2.5-VL-family model
on them with TRL, ``vlmguard train grpo`` continues with reinforcement learning on
format, judge and benign-preservation rewards.

Importing this package is cheap: torch, TRL and ``datasets`` load only when a
trainer or loader is used.
"""

from __future__ import annotations

from .config import SynthConfig
from .records import SourceSample, load_training_dataset, read_source, training_messages
from .synthesize import SynthSummary, synthesize

__all__ = [
    "SourceSample",
    "SynthConfig",
    "SynthSummary",
    "load_training_dataset",
    "read_source",
    "synthesize",
    "training_messages",
]
