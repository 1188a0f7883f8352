"""One rendering, for the ``hf`` export: a row loaded back from disk or parquet and tokenised by TRL's
``SFTTrainer`` gives the tokens and loss mask the project's own SFT gives the same trace
(:func:`tgrs_agents.loop.distill.encode` on the accepted record), with the tiny student's template and
with a Qwen-style one (``arguments | tojson``, which would quote a JSON string twice). The ``dpo``
counterpart is in test_pairs.py, beside its fixture."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from export_data import Curated, loop_rendering

from tgrs_agents import export_run

pytest.importorskip("torch")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tgrs_agents.loop.distill import encode, training_template  # noqa: E402
from tgrs_agents.student import tiny  # noqa: E402


@pytest.fixture(scope="module", params=["student", "qwen-style"])
def tokenizer(request: pytest.FixtureRequest, curated: Curated) -> Any:
    tok = tiny.train_tokenizer([json.dumps(r) for r in curated.accepted.values()])
    if request.param == "qwen-style":
        tok.chat_template = loop_rendering().QWEN_STYLE
    return tok


def quiet_trainer(make: Any) -> Any:
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRL's and transformers' advice, deprecations
            return make()
    finally:
        if bars:
            datasets.enable_progress_bars()


def with_calls(rows: Any) -> int:
    """The index of the first row with a tool call (what the double encoding would change)."""
    return next(i for i, r in enumerate(rows) if any(m["tool_calls"] for m in r["messages"]))


@pytest.mark.parametrize("suffix", ["", ".parquet"])
def test_sft_trainer_on_the_hf_export_trains_on_the_projects_tokens(curated: Curated, tmp_path: Path,
                                                                    tokenizer: Any, suffix: str) -> None:
    from trl import SFTConfig, SFTTrainer

    out = tmp_path / f"hf{suffix}"
    export_run(curated.dir, to="hf", out=out)
    if suffix:
        ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "c"))
    else:
        ds = datasets.load_from_disk(str(out))
    i = with_calls(ds)
    ds = ds.select([i])
    rec = curated.accepted[ds[0]["id"]]
    assert ds[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] == json.loads(
        json.dumps(rec["messages"][1]["tool_calls"][0]["function"]["arguments"]))  # an object, not a string
    ours = encode(tokenizer, rec, 4096, training_template(tokenizer))  # the project's SFT on accepted.jsonl
    args = SFTConfig(output_dir=str(tmp_path / "trl"), assistant_only_loss=True, max_length=4096, report_to="none",
                     use_cpu=True, bf16=False, activation_checkpointing=False)
    trainer = quiet_trainer(lambda: SFTTrainer(model=tiny.build_model(tokenizer, max_position_embeddings=4096),
                                               args=args, train_dataset=ds, processing_class=tokenizer))
    row = trainer.train_dataset[0]
    trl = {"input_ids": list(row["input_ids"]), "labels": list(row["labels"])}
    assert trl == loop_rendering().labelled(ours) and any(t != -100 for t in trl["labels"])
    text = tokenizer.decode(ours["input_ids"])
    assert "<|call|>calculator " in text or '"arguments": {"expression": "' in text  # rendered once, not twice
