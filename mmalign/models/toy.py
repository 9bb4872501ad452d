"""Build small models from scratch: a byte-level BPE tokenizer trained on local text and a
randomly initialised Llama-architecture causal LM, saved in Hugging Face format.

Used by ``mmalign zoo init`` and by the tests, so the real ``from_pretrained`` loading path runs
without any download.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")

# A chat template in the Llama/ChatML spirit that only uses our special tokens.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<s>' + message['role'] + '\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant\n' }}{% endif %}"
)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512, *, chat_template: str | None = None,
                        extra_special_tokens: Iterable[str] = ()):
    """Train a byte-level BPE tokenizer on ``texts``; returns a ``PreTrainedTokenizerFast``.

    Special tokens: ``<pad>`` (padding), ``<s>`` (BOS), ``</s>`` (EOS), ``<unk>``, plus any
    ``extra_special_tokens`` (e.g. media placeholders like ``<image>``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    extras = list(extra_special_tokens)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS) + extras,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=extras or None,
    )
    fast.chat_template = chat_template
    return fast


def tiny_llama_config(vocab_size: int, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                      num_kv_heads: int = 2, intermediate_size: int | None = None, max_position: int = 512,
                      bos_token_id: int = 1, eos_token_id: int = 2, pad_token_id: int = 0):
    """A LlamaConfig (grouped-query attention) at toy width."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def build_tiny_llama(out_dir: str | Path, texts: Iterable[str], *, vocab_size: int = 512, seed: int = 0,
                     chat_template: str | None = None, **config_kwargs) -> Path:
    """Train a tokenizer on ``texts``, build a random Llama at toy width, save both to ``out_dir``."""
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size, chat_template=chat_template)
    config = tiny_llama_config(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **config_kwargs,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


SAMPLE_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Human: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "Human: Can you help me write a poem?\n\nAssistant: Of course! Here is a short poem about the sea.",
    "Alignment makes a model helpful, honest and harmless.",
    "Best-of-N sampling draws N responses and keeps the one with the highest reward.",
    "The following are multiple choice questions (with answers) about abstract algebra.",
    "Answer: A B C D. The answer is (B).",
    "1 2 3 4 5 6 7 8 9 10 red green blue yellow circle square triangle beep tone",
]
