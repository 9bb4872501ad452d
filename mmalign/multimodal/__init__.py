"""Multimodal adapters behind the one Policy interface: open_clip vision towers, log-mel audio
encoders, projectors and ``<image>``/``<audio>``/``<video>`` placeholders over a causal LM, and
native Hugging Face vision-language models (LLaVA-style). See docs/multimodal.md."""
