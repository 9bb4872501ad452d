r"""A tabular contextual bandit that implements the :class:`~mmalign.models.policy.Policy`
protocol: each prompt is a context, each response is a single token from a small vocabulary.

The policy is a table of logits :math:`\theta[x, y]`; its reference is the frozen initial table.
Because everything is finite, the KL-regularised optimum is known in closed form,

.. math:: \pi^*(y|x) = \frac{\pi_{ref}(y|x)\, e^{\Phi(c(x,y))/\beta}}{\sum_{y'} \pi_{ref}(y'|x)\, e^{\Phi(c(x,y'))/\beta}},

so the whole CTRL pipeline (sampling, calibration, transforms, advantage estimators, KL
penalties, the optimiser) can be checked for exactness against it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmalign.errors import DataError
from mmalign.models.policy import Prompt, Samples, SequenceBatch, as_prompt


class BanditTokenizer:
    """The vocabulary of single-token responses (id ``i`` is ``vocab[i]``)."""

    pad_token_id = 0
    eos_token_id = None

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:  # noqa: ARG002
        return "".join(self.vocab[int(i)] for i in ids)


class LogitTable(nn.Module):
    """Trainable logits, one row per prompt."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.detach().clone().float())

    def forward(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        return self.logits[prompt_ids]


class BanditPolicy:
    """Single-token responses over ``vocab`` for a fixed list of ``prompts``."""

    def __init__(self, prompts: Sequence[str], vocab: Sequence[str], ref_logits: torch.Tensor,
                 device: torch.device | str = "cpu", *, frozen: bool = False) -> None:
        ref_logits = torch.as_tensor(ref_logits, dtype=torch.float32)
        if ref_logits.shape != (len(prompts), len(vocab)):
            raise DataError(f"bandit reference logits have shape {tuple(ref_logits.shape)}, "
                            f"expected [{len(prompts)}, {len(vocab)}] (prompts x vocab)")
        self.prompts = list(prompts)
        self.prompt_index = {p: i for i, p in enumerate(self.prompts)}
        self.tokenizer = BanditTokenizer(vocab)
        self.device = torch.device(device)
        self.ref_logits = ref_logits.to(self.device)
        self.model = LogitTable(ref_logits).to(self.device)
        self._prepared: nn.Module | None = None  # the accelerate-wrapped table (prepare)
        if frozen:
            self.model.requires_grad_(False)

    # -- Policy protocol ---------------------------------------------------------------------
    def _ids(self, prompts: Sequence[str | Prompt]) -> torch.Tensor:
        out = []
        for p in prompts:
            text = as_prompt(p).text
            if text not in self.prompt_index:
                raise DataError(f"bandit policy has no prompt {text!r}")
            out.append(self.prompt_index[text])
        return torch.tensor(out, dtype=torch.long, device=self.device)

    def _batch(self, prompts: Sequence[str | Prompt], pid: torch.Tensor, tokens: torch.Tensor,
               prompt_index: torch.Tensor) -> SequenceBatch:
        ones = torch.ones_like(tokens).view(-1, 1)
        return SequenceBatch(prompt_ids=pid.view(-1, 1), prompt_mask=ones.clone(), response_ids=tokens.view(-1, 1),
                             response_mask=ones, prompt_index=prompt_index, prompts=[as_prompt(p) for p in prompts])

    def sample(self, prompts: Sequence[str | Prompt], n: int = 1, *, max_new_tokens: int = 1,  # noqa: ARG002
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,  # noqa: ARG002
               stop: Sequence[str] = (), generator: torch.Generator | None = None,  # noqa: ARG002
               keep_distributions: bool = False) -> Samples:
        """Draw ``n`` tokens per prompt (``top_p`` is not supported; ``top_k`` keeps the k best)."""
        pid = self._ids(prompts)
        with torch.no_grad():
            logits = self.model(pid) / max(temperature, 1e-6)
            if top_k and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            logprobs = torch.log_softmax(logits, dim=-1)
            if greedy:
                tokens = logprobs.argmax(-1, keepdim=True).expand(-1, n)
            else:
                tokens = torch.multinomial(logprobs.exp().cpu(), n, replacement=True,
                                           generator=generator).to(self.device)
            lp = logprobs.gather(1, tokens)
        rows = pid.repeat_interleave(n)
        prompt_index = torch.arange(len(prompts), device=self.device).repeat_interleave(n)
        batch = self._batch([prompts[i] for i in prompt_index.tolist()], rows, tokens.reshape(-1), prompt_index)
        return Samples(prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask, response_ids=batch.response_ids,
                       response_mask=batch.response_mask, prompt_index=prompt_index,
                       prompts=[as_prompt(p) for p in prompts], logprobs=lp.reshape(-1, 1),
                       texts=[self.tokenizer.vocab[t] for t in tokens.reshape(-1).tolist()],
                       finish_reasons=["length"] * len(rows), n=n,
                       distributions=logprobs.repeat_interleave(n, 0).unsqueeze(1) if keep_distributions else None)

    def encode(self, prompts: Sequence[str | Prompt], responses: Sequence[str]) -> SequenceBatch:
        if len(prompts) != len(responses):
            raise DataError(f"encode got {len(prompts)} prompts but {len(responses)} responses")
        pid = self._ids(prompts)
        try:
            tokens = [self.tokenizer.index[r] for r in responses]
        except KeyError as exc:
            raise DataError(f"bandit policy has no response token {exc.args[0]!r}") from None
        return self._batch(prompts, pid, torch.tensor(tokens, device=self.device),
                           torch.arange(len(prompts), device=self.device))

    def logits(self, batch: SequenceBatch) -> torch.Tensor:
        return self.model(batch.prompt_ids[:, -1]).unsqueeze(1)

    def score(self, batch: SequenceBatch, *, temperature: float = 1.0) -> torch.Tensor:
        logprobs = torch.log_softmax(self.logits(batch) / temperature, dim=-1)
        return logprobs.gather(2, batch.response_ids.unsqueeze(-1)).squeeze(-1) * batch.response_mask

    def reference(self) -> BanditPolicy:
        return BanditPolicy(self.prompts, self.tokenizer.vocab, self.ref_logits, self.device, frozen=True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def set_trainable(self, scope: str = "all") -> None:
        """The logit table is all there is: only ``all`` applies."""
        if scope != "all":
            from mmalign.errors import ConfigError

            raise ConfigError(f"train.trainable: a bandit policy has no media projector; got '{scope}'")

    def prepare(self, accelerator: Any, *objects: Any) -> tuple[Any, ...]:
        """``accelerator.prepare`` the logit table with ``objects``; returns the prepared ``objects``
        (the wrapped table is what :meth:`through_prepared` forwards through)."""
        out = accelerator.prepare(self.model, *objects)
        out = out if isinstance(out, tuple) else (out,)
        self._prepared = out[0]
        return tuple(out[1:])

    @contextlib.contextmanager
    def through_prepared(self) -> Iterator[nn.Module]:
        """Within the block, forward passes run through the prepared table (the table itself
        before :meth:`prepare`); the unwrapped table is back afterwards."""
        original = self.model
        self.model = self._prepared if self._prepared is not None else original
        try:
            yield self.model
        finally:
            self.model = original

    def probs(self) -> torch.Tensor:
        """The current policy table ``[prompts, vocab]``."""
        with torch.no_grad():
            return torch.softmax(self.model.logits, dim=-1).detach().cpu()

    def save(self, directory: Any) -> None:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"logits": self.model.logits.detach().cpu().contiguous(),
                   "ref_logits": self.ref_logits.cpu().contiguous()}, str(out / "bandit.safetensors"))
        (out / "bandit.json").write_text(json.dumps({"prompts": self.prompts, "vocab": self.tokenizer.vocab}))


class TableReward:
    """A known reward ``r[x, y]`` for the bandit (NaN entries are allowed, to test error paths)."""

    deterministic = True

    def __init__(self, prompts: Sequence[str], vocab: Sequence[str], table: torch.Tensor) -> None:
        self.prompts = {p: i for i, p in enumerate(prompts)}
        self.vocab = {t: i for i, t in enumerate(vocab)}
        self.table = torch.as_tensor(table, dtype=torch.float32)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], media=None) -> torch.Tensor:  # noqa: ARG002
        rows = [self.prompts[as_prompt(p).text] for p in prompts]
        cols = [self.vocab[r] for r in responses]
        return self.table[rows, cols].clone()

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.table.numpy().tobytes()).hexdigest()[:16]


def exact_calibration(ref_probs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    r""":math:`c(x,y) = P_{y'\sim\pi_{ref}}[r(y') < r(y)] + \tfrac12 P[r(y') = r(y)]` for every cell."""
    less = (rewards.unsqueeze(1) < rewards.unsqueeze(2)).to(ref_probs.dtype)  # [P, y, y']
    equal = (rewards.unsqueeze(1) == rewards.unsqueeze(2)).to(ref_probs.dtype)
    return ((less + 0.5 * equal) * ref_probs.unsqueeze(1)).sum(-1)


def tilted_optimum(ref_probs: torch.Tensor, phi: torch.Tensor, beta: float) -> torch.Tensor:
    r""":math:`\pi^* \propto \pi_{ref}\, e^{\Phi/\beta}`, row-wise."""
    return torch.softmax(torch.log(ref_probs) + phi / beta, dim=-1)
