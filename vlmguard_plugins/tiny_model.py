"""A tiny, random-weight Qwen2.5-VL built offline in seconds.

``make_tiny_model(path)`` writes a model with the real Qwen2.5-VL architecture at toy
size (config, weights, tokenizer, processor, chat template) to ``path``, without any
download; load it with ``load_backend("transformers", model=path)``.  Its output is
untrained noise: it exercises every code path that loads, batches, generates or
trains, and judges nothing.  ``vlmguard demo`` runs on it, and
:mod:`vlmguard_plugins.testing` re-exports it for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .parsing import format_output
from .types import Risk

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "TINY_CHAT_TEMPLATE", "make_tiny_model"]

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>"
    "{% endgeneration %}{% else %}{{ message['content'] }}<|im_end|>{% endif %}\n"
    "{% else %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>{% endgeneration %}\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _training_corpus() -> list[str]:
    from .policy import BLOCK_INSTRUCTION, SHIELD_INSTRUCTION
    from .prompts import SYSTEM_PROMPT

    sample = format_output(
        "textual: the request is harmless\nvisual: an everyday object\ncross-modal: no added risk",
        Risk.LOW,
        "Describe how to use this safely, with precautions.",
    )
    return [SYSTEM_PROMPT, SHIELD_INSTRUCTION, BLOCK_INSTRUCTION, sample] * 4 + [
        "The user sent 1 image(s) above and this request. <user_request> </user_request> "
        "Analyse it and write the rewrite in the required format. <conversation> user: "
        "assistant: none low medium high knife medicine chemical weapon drug how do I use "
        "this what is in the picture explain describe make build 0123456789",
    ]


def _build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def _mrope_section(head_dim: int) -> list[int]:
    """Split the rotary half of a head over (time, height, width) as Qwen2.5-VL does (1:1.5:1.5)."""
    half = head_dim // 2
    temporal, height = half // 4, 3 * half // 8
    return [temporal, height, half - temporal - height]


def make_tiny_model(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 1024,
    seed: int = 0,
) -> Path:
    """Write a random-weight Qwen2.5-VL with tokenizer, processor and chat template to ``path``.

    Builds everything locally (no download) in a few seconds.  The model has the real
    Qwen2.5-VL architecture at toy size, so every code path that loads, batches,
    generates or trains runs for real.  Returns the folder.
    """
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(vocab_size)

    def token_id(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        assert isinstance(found, int)  # one token in, one id out
        return found

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": _mrope_section(hidden_size // 4),
            },
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": token_id("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = token_id("<|im_end|>")
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    model.generation_config.do_sample = False
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    video_processor = Qwen2VLVideoProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=TINY_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
