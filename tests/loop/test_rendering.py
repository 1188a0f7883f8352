"""One rendering: what the loop trains on is what TRL's SFTTrainer trains on from the same pool rows.

The loop's SFT encodes ``pool.jsonl`` rows itself (:func:`tgrs_agents.loop.distill.encode`); a user
who hands the same file to TRL gets SFTTrainer's tokenization, and a chat template that reads the rows
as they are. Both must give the same tokens and the same loss mask, with the tiny student's template
and with a Qwen-style one (``tojson`` on the arguments, which double-encodes a JSON string).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tgrs_agents.loop.distill import encode, training_template  # noqa: E402
from tgrs_agents.loop.pool import pool_accepted  # noqa: E402
from tgrs_agents.student import tiny  # noqa: E402
from tgrs_agents.tasks import arithmetic  # noqa: E402

# Qwen 2.5's layout (tools in a system block, <tool_call> JSON with `arguments | tojson`, tool results
# as <tool_response> in a user turn), with {% generation %} around assistant turns for the loss mask.
QWEN_STYLE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools><|im_end|>\n{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}<|im_start|>assistant\n{% generation %}"
    "{%- if message.content %}{{ message.content }}{%- endif %}"
    "{%- if message.tool_calls %}{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '\n<tool_call>\n{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}\n</tool_call>'
    "{%- endfor %}{%- endif %}<|im_end|>{% endgeneration %}\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n"
    "</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    """A candidate as the rollout writes it: OpenAI format, tool-call arguments a JSON string."""
    train, _ = arithmetic.splits(4, 2, seed=3)
    return arithmetic.demonstration(train[0])


@pytest.fixture(scope="module", params=["student", "qwen-style"])
def tokenizer(request: pytest.FixtureRequest, record: dict[str, Any]) -> Any:
    tok = tiny.train_tokenizer([json.dumps(record)])
    if request.param == "qwen-style":
        tok.chat_template = QWEN_STYLE
    return tok


def labelled(enc: Any) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (-100 off the assistant mask), as TRL folds the mask in."""
    ids = list(enc["input_ids"])
    return {"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, enc["assistant_masks"], strict=True)]}


def trl_encoding(tok: Any, pool_file: Path, out: Path) -> dict[str, list[int]]:
    """What SFTTrainer trains on when a user gives it the pool file (loaded as datasets loads JSONL):
    ``input_ids`` and ``labels`` (TRL folds ``assistant_only_loss``'s mask into them)."""
    from trl import SFTConfig, SFTTrainer

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        data = datasets.load_dataset("json", data_files=str(pool_file), split="train")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRL's and transformers' advice, deprecations
            args = SFTConfig(output_dir=str(out), assistant_only_loss=True, max_length=4096, report_to="none",
                             use_cpu=True, bf16=False, activation_checkpointing=False)
            trainer = SFTTrainer(model=tiny.build_model(tok, max_position_embeddings=4096), args=args,
                                 train_dataset=data, processing_class=tok)
    finally:
        if bars:
            datasets.enable_progress_bars()
    row = trainer.train_dataset[0]
    return {"input_ids": list(row["input_ids"]), "labels": list(row["labels"])}


def test_project_sft_and_trl_train_on_the_same_tokens(tmp_path: Path, tokenizer: Any,
                                                       record: dict[str, Any]) -> None:
    (row,) = pool_accepted([], [record], cap=4)  # what pool.jsonl holds
    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text(json.dumps(row) + "\n")
    ours = encode(tokenizer, json.loads(pool_file.read_text()), 4096, training_template(tokenizer))
    # a chat template applied to the row as stored (what any HF user does)
    hf = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=True, return_dict=True,
                                       return_assistant_tokens_mask=True)
    assert ours == {"input_ids": list(hf["input_ids"]), "assistant_masks": list(hf["assistant_masks"])}
    trl = trl_encoding(tokenizer, pool_file, tmp_path / "trl")
    assert labelled(ours) == trl and any(t != -100 for t in trl["labels"])
    text = tokenizer.decode(ours["input_ids"])
    expr = json.loads(record["messages"][1]["tool_calls"][0]["function"]["arguments"])["expression"]
    assert ("<|call|>calculator " + expr in text) or ('"arguments": {"expression": "' + expr + '"}' in text)

    # the OpenAI form (arguments as a JSON string) is what the templates render differently: double-encoded
    openai = tokenizer.apply_chat_template(record["messages"], tools=record["tools"], tokenize=True,
                                           return_dict=True, return_assistant_tokens_mask=True)
    assert list(openai["input_ids"]) != ours["input_ids"]
