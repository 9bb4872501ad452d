"""mmalign: inference-aware alignment (CTRL) for text and multimodal language-model families."""

import warnings as _warnings

__version__ = "0.1.0"

# peft (0.21) asks transformers (5.x) for `is_gradient_checkpointing`, which transformers deprecates
# with a FutureWarning on every LoRA load; it is their interplay, not something a user can act on.
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
