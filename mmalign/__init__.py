"""mmalign: inference-aware alignment (CTRL) for text and multimodal language-model families."""

__version__ = "0.1.0"
