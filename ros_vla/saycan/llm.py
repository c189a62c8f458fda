"""Say: language-model scores of candidate skills, from pluggable backends.

score(prompt, options)[i] = sum over the tokens t of options[i] of log p(t | prompt, the
option's earlier tokens): the paper's formulation. The prompt is shared by every option,
so the local backend runs it once and reuses its key/value cache for all of them, in
batches. Backends:

- HFCausalLM: a local Hugging Face causal LM loaded from a directory (the shipped default,
  models/saycan_lm, is one we train here; any GPT-2/Llama-style checkpoint directory works).
- OpenAICompatibleLM: a server with the OpenAI `/v1/completions` API that returns prompt
  log-probabilities with `echo: true, logprobs: 1` (as vLLM serves), for a large model on
  another machine.
"""

from __future__ import annotations

import copy
import json
import os
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np


class LanguageModel(Protocol):
    name: str

    def score(self, prompt: str, options: list[str]) -> np.ndarray:
        """Sum of log-probabilities of each option's tokens after the prompt (float64, one per option)."""

    def generate(self, prompt: str, max_tokens: int, stop: str) -> str:
        """Greedy continuation of the prompt up to `stop` (not included) or max_tokens."""


class HFCausalLM:
    """A causal LM from a local directory (from_pretrained, never downloaded).

    batch_size: options scored per forward pass (0 = all at once). use_cache: run the shared
    prompt once and score options on its key/value cache; False scores prompt + option
    from scratch (the reference the cache is tested against).
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 0, use_cache: bool = True, model=None,
                 tokenizer=None):
        import torch

        self._torch = torch
        if model is None or tokenizer is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.name = f"hf:{Path(str(model_dir)).name}" if model_dir else "hf"

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _batches(self, n: int):
        size = self.batch_size or n
        for start in range(0, n, size):
            yield range(start, min(n, start + size))

    def score(self, prompt: str, options: list[str]) -> np.ndarray:
        torch = self._torch
        prompt_ids = self._ids(prompt)
        option_ids = [self._ids(option) for option in options]
        if any(not ids for ids in option_ids) or not prompt_ids:
            raise ValueError("the prompt and every option need at least one token")
        scores = np.zeros(len(options))
        with torch.inference_mode():
            if self.use_cache:
                out = self.model(torch.tensor([prompt_ids]), use_cache=True)
                prompt_cache, first_logits = out.cache, out.logits[0, -1].float()
            for batch in self._batches(len(options)):
                ids = [option_ids[i] for i in batch]
                width = max(map(len, ids))
                # Right padding: causal attention keeps padded positions from touching real ones.
                padded = torch.tensor([seq + [0] * (width - len(seq)) for seq in ids])
                if self.use_cache:
                    cache = copy.deepcopy(prompt_cache)
                    cache.batch_repeat_interleave(len(ids))
                    mask = torch.ones(len(ids), len(prompt_ids) + width, dtype=torch.long)
                    logits = self.model(padded, cache=cache, attention_mask=mask, use_cache=True).logits.float()
                    # Token j of an option is predicted by the prompt's last position (j = 0) or option position j-1.
                    logits = torch.cat([first_logits.expand(len(ids), 1, -1), logits[:, :-1]], dim=1)
                else:
                    full = torch.cat([torch.tensor([prompt_ids] * len(ids)), padded], dim=1)
                    logits = self.model(full, attention_mask=torch.ones_like(full),
                                        use_cache=False).logits.float()[:, len(prompt_ids) - 1:-1]
                log_probs = torch.log_softmax(logits, dim=-1).gather(2, padded[:, :, None])[:, :, 0]
                for row, i in enumerate(batch):
                    scores[i] = float(log_probs[row, :len(option_ids[i])].double().sum())
        return scores

    def generate(self, prompt: str, max_tokens: int, stop: str) -> str:
        torch = self._torch
        ids = self._ids(prompt)
        generated: list[int] = []
        with torch.inference_mode():
            out = self.model(torch.tensor([ids]), use_cache=True)
            for _ in range(max_tokens):
                token = int(out.logits[0, -1].argmax())
                generated.append(token)
                text = self.tokenizer.decode(generated)
                if stop in text:
                    return text[:text.index(stop)]
                out = self.model(torch.tensor([[token]]), cache=out.cache, use_cache=True)
        return self.tokenizer.decode(generated)


class OpenAICompatibleLM:
    """Scores through `POST {base_url}/v1/completions` with echo + logprobs (vLLM, llama.cpp server, ...).

    One request scores every option: the prompt is sent as a list of prompt + option
    strings. An option's tokens are those whose text offset falls at or after the end of
    the shared prompt (the server tokenizes the joined text, as the model would read it).
    """

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")
        self.timeout_s = timeout_s
        self.name = f"openai:{model}"

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/v1/completions", json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read())

    def score(self, prompt: str, options: list[str]) -> np.ndarray:
        reply = self._post({"model": self.model, "prompt": [prompt + option for option in options],
                            "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1})
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        if len(choices) != len(options):
            raise RuntimeError(f"the server answered {len(choices)} choices for {len(options)} prompts")
        scores = np.zeros(len(options))
        for i, (choice, option) in enumerate(zip(choices, options)):
            logprobs = choice["logprobs"]
            end = len(prompt) + len(option)  # tokens beyond it are the one generated token
            picked = [lp for lp, offset in zip(logprobs["token_logprobs"], logprobs["text_offset"])
                      if len(prompt) <= offset < end]
            if not picked or any(lp is None for lp in picked):
                raise RuntimeError("the server did not return log-probabilities for the option's tokens "
                                   "(it needs echo + logprobs support)")
            scores[i] = float(sum(picked))
        return scores

    def generate(self, prompt: str, max_tokens: int, stop: str) -> str:
        reply = self._post({"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                            "stop": [stop]})
        return reply["choices"][0]["text"].split(stop)[0]


class UniformLM:
    """The "no language model" ablation: every option equally likely."""

    name = "uniform"

    def score(self, prompt: str, options: list[str]) -> np.ndarray:
        return np.zeros(len(options))

    def generate(self, prompt: str, max_tokens: int, stop: str) -> str:
        return ""


def load_language_model(spec: str, batch_size: int = 0) -> LanguageModel:
    """'hf:DIR' or a directory, 'openai:BASE_URL#MODEL', or 'uniform'."""
    if spec == "uniform":
        return UniformLM()
    if spec.startswith("openai:"):
        url, _, model = spec[len("openai:"):].partition("#")
        if not model:
            raise ValueError("openai backend: use openai:BASE_URL#MODEL_NAME")
        return OpenAICompatibleLM(url, model)
    return HFCausalLM(spec.removeprefix("hf:"), batch_size=batch_size)
