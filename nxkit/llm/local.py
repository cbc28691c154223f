"""The in-process model as a backend (the offline SmolLM2, or any causal LM)."""

from __future__ import annotations

from typing import Any

import torch

from ..records import Component, Usage
from .base import Capabilities, Completion, LLMError, PromptLogprobs, TokenLogprob, count


class LocalBackend:
    """A Hugging Face causal LM in process: full next-token distributions, prefix key/value reuse.

    Default: the offline SmolLM2-135M-Instruct, a smoke-level explainer and simulator.
    """

    name = "local"
    capabilities = Capabilities(chat=True, generated_logprobs=True, prompt_logprobs=True, concurrent=False)

    def __init__(self, model=None, tokenizer=None, reuse_prefix: bool = True):
        self.default_model = model is None
        if model is None:
            from ..offline import load_offline_hf

            model, tokenizer = load_offline_hf()
        self.model, self.tokenizer = model, tokenizer
        self.model.eval()
        self.reuse_prefix = reuse_prefix
        self.usage = Usage()
        self._kv = None
        self._kv_ids: list[int] = []
        self._prefix: tuple[str, list[int]] = ("", [])

    def __repr__(self) -> str:
        return f"LocalBackend({type(self.model).__name__}, reuse_prefix={self.reuse_prefix})"

    @property
    def device(self):
        return next(self.model.parameters()).device

    def ids_and_offsets(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids and each token's start offset in `text` (no special tokens added)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [a for a, _ in enc["offset_mapping"]]

    @torch.no_grad()
    def next_token_logprobs(self, prefix: list[int], continuation: list[int], positions: list[int]) -> torch.Tensor:
        """Log-probabilities of the token at each position of `continuation`, given all before it.

        The keys and values of the longest prefix shared with the previous call are reused
        (when `reuse_prefix`), so windows scored after the same few-shot prefix and explanation
        only pay for their own tokens. Returns a [len(positions), vocab] tensor.
        """
        from transformers import DynamicCache

        if not continuation or any(not 1 <= p < len(continuation) for p in positions):
            raise ValueError("positions must index the continuation after its first token")
        if not self.reuse_prefix:
            ids = torch.tensor([prefix + continuation], device=self.device)
            logits = self.model(ids).logits[0, len(prefix) :]
            count(self.usage, requests=1, prompt_tokens=ids.shape[1])
            return torch.log_softmax(logits[[p - 1 for p in positions]].float(), dim=-1)
        shared = 0
        for a, b in zip(self._kv_ids, prefix, strict=False):
            if a != b:
                break
            shared += 1
        if self._kv is None or shared == 0:
            self._kv, self._kv_ids, shared = DynamicCache(config=self.model.config), [], 0
        if len(self._kv_ids) > shared:
            self._kv.crop(-(len(self._kv_ids) - shared))  # negative: drop that many (old and new transformers)
            self._kv_ids = self._kv_ids[:shared]
        rest = prefix[shared:]
        if rest:
            self.model(torch.tensor([rest], device=self.device), past_key_values=self._kv, use_cache=True)
            self._kv_ids = list(prefix)
        out = self.model(torch.tensor([continuation], device=self.device), past_key_values=self._kv, use_cache=True)
        self._kv.crop(-len(continuation))  # back to the prefix, ready for the next window
        count(self.usage, requests=1, prompt_tokens=len(rest) + len(continuation), reused_prompt_tokens=shared)
        return torch.log_softmax(out.logits[0, [p - 1 for p in positions]].float(), dim=-1)

    async def check(self) -> None:
        """Nothing to reach: the model is in this process."""

    def describe(self) -> Component:
        """What the manifest records of this backend."""
        model = "SmolLM2-135M-Instruct (offline default)" if self.default_model else type(self.model).__name__
        return Component("llm", model=model, backend=self.name, smoke_level=self.default_model)

    async def placeholder_logprobs(
        self, prefix: str, text: str, offsets: list[int], candidates: list[str], top: int = 20
    ) -> list[dict[str, float] | None]:
        """Exact log-probabilities of every candidate as the next token at each offset of `text` (after `prefix`).

        One forward pass over `text`, reusing the keys and values of `prefix`; None at every offset when a
        placeholder merged with its neighbour in tokenisation (`top` is not needed: nothing is truncated).
        """
        if self._prefix[0] != prefix:
            self._prefix = (prefix, self.ids_and_offsets(prefix)[0])
        ids, starts = self.ids_and_offsets(text)
        index = {o: j for j, o in enumerate(starts)}
        if any(o not in index for o in offsets):
            return [None] * len(offsets)
        cand_ids = []
        for c in candidates:
            piece = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            if len(piece) != 1:
                raise LLMError(
                    f"the local model's tokenizer splits {c!r} into {len(piece)} tokens; candidates must be one"
                )
            cand_ids.append(piece[0])
        logprobs = self.next_token_logprobs(self._prefix[1], ids, [index[o] for o in offsets])[:, cand_ids]
        return [dict(zip(candidates, row, strict=True)) for row in logprobs.tolist()]

    async def prompt_logprobs(self, prompt: str, top: int = 5) -> PromptLogprobs:
        """Top log-probabilities at every prompt position (the same shape the server path returns)."""
        ids, offsets = self.ids_and_offsets(prompt)
        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0].float()
        count(self.usage, requests=1, prompt_tokens=len(ids))
        lp = torch.log_softmax(logits, dim=-1)
        vals, idx = lp.topk(top, dim=-1)
        tops: list[dict[str, float] | None] = [None]
        for i in range(len(ids) - 1):
            tops.append({self.tokenizer.decode([int(t)]): float(v) for v, t in zip(vals[i], idx[i], strict=True)})
        return PromptLogprobs(tokens=[self.tokenizer.decode([i]) for i in ids], offsets=offsets, top=tops)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        top_logprobs: int = 0,
    ) -> Completion:
        """Generate with the chat template; sampling is seeded so the same call gives the same text."""
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        input_ids = ids["input_ids"].to(self.device)
        if seed is not None:
            torch.manual_seed(seed)
        kwargs: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=1.0, top_k=0)
        with torch.no_grad():
            out = self.model.generate(
                input_ids,
                attention_mask=ids["attention_mask"].to(self.device),
                max_new_tokens=max_tokens,
                return_dict_in_generate=True,
                output_logits=bool(top_logprobs),
                pad_token_id=self.tokenizer.eos_token_id,
                **kwargs,
            )
        new = out.sequences[0, input_ids.shape[1] :].tolist()
        eos = self.tokenizer.eos_token_id
        finish = "length"
        if eos in new:
            new, finish = new[: new.index(eos)], "stop"
        count(self.usage, requests=1, prompt_tokens=input_ids.shape[1], completion_tokens=len(new))
        tokens = None
        if top_logprobs:
            tokens = []
            for step, tok in enumerate(new):
                lp = torch.log_softmax(out.logits[step][0].float(), dim=-1)
                vals, idx = lp.topk(top_logprobs)
                top = {self.tokenizer.decode([int(t)]): float(v) for v, t in zip(vals, idx, strict=True)}
                tokens.append(TokenLogprob(self.tokenizer.decode([tok]), float(lp[tok]), top))
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True), tokens=tokens, finish_reason=finish
        )
