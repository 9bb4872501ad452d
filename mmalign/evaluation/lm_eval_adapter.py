"""An mmalign model as an lm-evaluation-harness model, registered as ``mmalign``.

    import mmalign.evaluation.lm_eval_adapter  # registers the model
    lm_eval.simple_evaluate(model="mmalign", model_args="pretrained=CKPT_DIR", tasks=[...])
    lm_eval.simple_evaluate(model=MMAlignLM(policy=my_policy), tasks=[...])

``loglikelihood`` uses the same lm-eval-exact tokenisation and the fast backend of
:mod:`mmalign.evaluation.mmlu.backends` (shared inputs, longest-first batches, prefix KV cache);
``loglikelihood_rolling`` uses lm-eval's disjoint rolling windows; ``generate_until`` greedy-decodes
through ``policy.sample`` (or ``model.generate``) and cuts at the stop strings.
Needs the optional ``eval`` extra (``pip install mmalign[eval]``).
"""

from __future__ import annotations

from typing import Any

try:
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the lm-eval adapter needs lm-eval: pip install 'mmalign[eval]'") from exc

from mmalign.evaluation.mmlu.backends import HFBackend, open_backend
from mmalign.evaluation.mmlu.tokens import encode_pair, make_row


@register_model("mmalign")
class MMAlignLM(LM):
    """Wrap a Policy (``policy=``) or a checkpoint directory (``pretrained=``) for lm-eval."""

    def __init__(self, pretrained: str | None = None, policy: Any = None, batch_size: int | str = 16,
                 prefix_cache: bool | str = True, add_bos_token: bool | str | None = None, dtype: str = "float32",
                 device: str | None = None, max_gen_toks: int | str = 256, **_: Any) -> None:
        super().__init__()
        if (pretrained is None) == (policy is None):
            raise ValueError("give exactly one of pretrained= or policy=")
        self.policy = policy
        self.backend = open_backend(policy if policy is not None else pretrained, dtype=dtype, device=device or "cpu",
                                    prefix_cache=_bool(prefix_cache), add_bos_token=_bool(add_bos_token))
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_gen_toks = int(max_gen_toks)
        tok = getattr(self.backend, "tokenizer", None) or getattr(policy, "tokenizer", None)
        self.tokenizer = tok
        self.prefix_token_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        rows = [make_row(ctx, cont, self.backend.max_length) for ctx, cont in pairs]
        greedy: list[bool] = [False] * len(rows)
        if isinstance(self.backend, HFBackend):
            scores = self.backend.score_rows(rows, self.batch_size, greedy=greedy)
        else:
            scores = self.backend.score_rows(rows, self.batch_size)
        return list(zip(scores, greedy))

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for context, continuation in (r.args for r in requests):
            if context == "":
                cont = self.backend.encode(continuation)
                if cont and cont[0] == self.prefix_token_id:
                    pairs.append((cont[:1], cont[1:]))
                else:
                    pairs.append(([self.prefix_token_id], cont))
            else:
                pairs.append(encode_pair(self.backend.encode, context, continuation))
        return self._score(pairs)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for (text,) in (r.args for r in requests):
            windows = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.backend.encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.backend.max_length, context_len=1)]
            out.append(sum(score for score, _ in self._score([(list(c), list(t)) for c, t in windows])))
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for context, kwargs in (r.args for r in requests):
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            text = self._greedy(context, max_new, until)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            out.append(text)
        return out

    def _greedy(self, context: str, max_new_tokens: int, stop: list[str]) -> str:
        if self.policy is not None and hasattr(self.policy, "sample"):
            return self.policy.sample([context], n=1, max_new_tokens=max_new_tokens, greedy=True, stop=stop).texts[0]
        import torch

        model, tok = self.backend.model, self.backend.tokenizer
        ids = torch.tensor([self.backend.encode(context)], device=self.backend.device)
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")
