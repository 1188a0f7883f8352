"""A tiny student made from nothing but a transformers config and a locally trained tokenizer.

* Tokenizer: character level, *trained* on the task corpus with the ``tokenizers`` library
  (a WordLevel model over single characters), plus role tokens, wrapped as a
  ``PreTrainedTokenizerFast`` with a chat template. ``padding_side="left"`` is a constructor
  argument, so it survives ``save_pretrained`` / ``from_pretrained``.
* Chat template: user, assistant and tool roles; assistant text is wrapped in
  ``{% generation %}`` so ``apply_chat_template(..., return_assistant_tokens_mask=True)`` yields the
  loss mask (tool output is never trained on). Tool calls use a compact syntax that a
  sub-million-parameter model can learn: ``<|call|>calculator 59-7+13``.
* Model: ``LlamaForCausalLM`` from a ``LlamaConfig`` (about 0.5 M parameters, random init).

Nothing here is downloaded; ``from_pretrained("Qwen/...")`` users take the same code paths with
their model's own template and tool-call format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIAL = ["<pad>", "<unk>", "<|user|>", "<|assistant|>", "<|tool|>", "<|system|>", "<|call|>",
           "<|end|>"]

CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "<|assistant|>{% generation %}"
    "{%- if m.tool_calls -%}"
    "{%- for tc in m.tool_calls -%}<|call|>{{ tc.function.name }}"
    "{%- if tc.function.arguments is mapping -%}"
    "{%- for k, v in tc.function.arguments.items() %} {{ v }}{%- endfor -%}"
    "{%- else %} {{ tc.function.arguments }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}{{ m.content }}{%- endif -%}"
    "<|end|>{% endgeneration %}"
    "{%- else -%}<|{{ m.role }}|>{{ m.content }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

# Characters the tokenizer always knows, whatever the corpus: digits, operators, ASCII letters.
BASE_CHARS = "0123456789+-*/=()?.,:;!'\" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_{}[]<>|\n"


def train_tokenizer(corpus: Iterable[str]) -> Any:
    """Train a character-level tokenizer on ``corpus`` and wrap it for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL, min_frequency=1, vocab_size=512)
    tok.train_from_iterator([BASE_CHARS, *corpus], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|end|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=128,
        additional_special_tokens=SPECIAL[2:7],
    )


def build_model(tokenizer: Any, *, hidden_size: int = 128, intermediate_size: int = 512,
                num_hidden_layers: int = 2, num_attention_heads: int = 4,
                max_position_embeddings: int = 128, seed: int = 0) -> Any:
    """A randomly initialised Llama-style causal LM sized for ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg)


def parse_compact_call(text: str, tools: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """``calculator 59-7+13`` -> an OpenAI tool call (arguments as a JSON string), or None.

    The rest of the line goes to the tool's first required parameter (or its first one).
    """
    text = text.strip()
    if not text:
        return None
    name, _, rest = text.partition(" ")
    param = "input"
    for t in tools or []:
        fn = t.get("function", t)
        if fn.get("name") == name:
            params = fn.get("parameters", {})
            req = params.get("required") or list(params.get("properties", {}))
            param = req[0] if req else param
            break
    return {"type": "function", "function": {"name": name, "arguments": json.dumps({param: rest})}}


def save(model: Any, tokenizer: Any, path: str | Path) -> Path:
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
