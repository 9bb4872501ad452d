"""Models: the Policy protocol (``policy``), its factory (``loading``) and its adapters: text
(``text``: any HF causal LM), multimodal (``multimodal``: a causal LM with media adapters from
``adapters`` = ``vision`` / ``audio`` encoders + ``projector``, or a native HF VLM; ``media`` reads
images, audio and video), and toy builders (``toy``). The tiers live in :mod:`mmalign.zoo`."""
