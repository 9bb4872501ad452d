"""An mmalign model as an lm-evaluation-harness model, registered as ``mmalign``.

    import mmalign.evaluation.lm_eval_adapter  # registers the model
    lm_eval.simple_evaluate(model="mmalign", model_args="pretrained=CKPT_DIR", tasks=[...])
    lm_eval.simple_evaluate(model=MMAlignLM(policy=my_policy), tasks=[...])

Everything goes through the policy's scoring interface (:class:`~mmalign.models.policy.ScoringPolicy`;
a path is loaded by the policy factory, so exports work too): ``loglikelihood`` uses lm-eval's
tokenisation (``policy.tokenize``) and ``policy.score_continuations`` (shared inputs, longest-first
batches, prefix KV cache); ``loglikelihood_rolling`` uses lm-eval's disjoint rolling windows;
``generate_until`` greedy-decodes through ``policy.sample`` and cuts at the stop strings.
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

from mmalign.evaluation.mmlu.tokens import encode_pair, make_row
from mmalign.models.policy import TokenPrompt


@register_model("mmalign")
class MMAlignLM(LM):
    """Wrap a Policy (``policy=``) or a checkpoint directory (``pretrained=``) for lm-eval."""

    def __init__(self, pretrained: str | None = None, policy: Any = None, batch_size: int | str = 16,
                 prefix_cache: bool | str = True, add_bos_token: bool | str | None = None, dtype: str = "float32",
                 device: str | None = None, max_gen_toks: int | str = 256, **_: Any) -> None:
        super().__init__()
        if (pretrained is None) == (policy is None):
            raise ValueError("give exactly one of pretrained= or policy=")
        if policy is None:
            from mmalign.models.loading import load_policy

            policy = load_policy(pretrained, device=device or "cpu", dtype=dtype, chat_template="off")
        self.policy = policy
        self.shared_prefix = _bool(prefix_cache) is not False
        self.add_bos_token = _bool(add_bos_token)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_gen_toks = int(max_gen_toks)
        self.prefix_token_id = policy.prefix_token_id

    def _encode(self, text: str) -> list[int]:
        return self.policy.tokenize(text, add_special_tokens=self.add_bos_token)

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        rows = [make_row(ctx, cont, self.policy.max_length) for ctx, cont in pairs]
        scored = self.policy.score_continuations([r.context for r in rows], [r.cont for r in rows],
                                                 batch_size=self.batch_size, shared_prefix=self.shared_prefix)
        return list(zip(scored.logprobs, scored.greedy))

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for context, continuation in (r.args for r in requests):
            if context == "":
                cont = self._encode(continuation)
                if cont and cont[0] == self.prefix_token_id:
                    pairs.append((cont[:1], cont[1:]))
                else:
                    pairs.append(([self.prefix_token_id], cont))
            else:
                pairs.append(encode_pair(self._encode, context, continuation))
        return self._score(pairs)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for (text,) in (r.args for r in requests):
            windows = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self._encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.policy.max_length, context_len=1)]
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
        prompt = TokenPrompt(token_ids=self._encode(context))  # lm-eval's tok_encode, no chat template
        return self.policy.sample([prompt], n=1, max_new_tokens=max_new_tokens, greedy=True, stop=stop).texts[0]


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")
