"""``tgrs export`` end to end on a real curate run: every format written and loaded back with
``datasets``, tool calls and ids round trip, each hygiene rule counted in the printed summary and the
sidecar, bad records set aside with file and line, a loop directory, and one ``SFTTrainer`` run on the
hf export."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from export_data import AWS_KEY, BEARER, HANDMADE, OPENAI_KEY, ROOT, Curated

from tgrs_agents import Hygiene, export_run
from tgrs_agents.chat import parse_arguments
from tgrs_agents.cli import main as cli_main
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate

datasets = pytest.importorskip("datasets")

SET_ASIDE, DROPPED = {"image"}, {"errored": "errored", "unanswered": "no_answer"}
HANDMADE_IDS = {r["id"] for r in HANDMADE}


def kept_ids(c: Curated) -> list[str]:
    """The ids a default export writes, in order (the records' order in accepted.jsonl)."""
    return [i for i in c.accepted if i not in SET_ASIDE and i not in DROPPED]


def calls(messages: list[dict[str, Any]]) -> list[tuple[Any, str, Any]]:
    # accepted.jsonl holds arguments as objects (what SFT renders); the OpenAI formats hold JSON strings
    return [(tc.get("id"), tc["function"]["name"], parse_arguments(tc["function"]["arguments"]))
            for m in messages for tc in m.get("tool_calls") or []]


def results(messages: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    return [(m.get("tool_call_id"), m["content"]) for m in messages if m["role"] == "tool"]


def check_paired(messages: list[dict[str, Any]]) -> None:
    """Every call has exactly one result with its id and every result answers a call."""
    ids = [c[0] for c in calls(messages)]
    assert all(ids) and sorted(ids) == sorted(r[0] for r in results(messages))
    assert len(set(ids)) == len(ids)


def check_rows(c: Curated, rows: dict[str, dict[str, Any]]) -> None:
    """openai-ft / hf rows (as loaded back, None-filled): ids, tool calls and hygiene as expected."""
    assert list(rows) == kept_ids(c)
    for cid, row in rows.items():
        msgs = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
        check_paired(msgs)
        assert msgs[-1]["role"] == "assistant" and msgs[-1]["content"].startswith("Answer:")
        orig = c.accepted[cid]["messages"]
        if cid not in HANDMADE_IDS | {"secret"}:  # untouched: calls, ids and results exactly as curated
            assert calls(msgs) == calls(orig) and results(msgs) == results(orig)
            assert [m["role"] for m in msgs] == [m["role"] for m in orig]
    assert calls(rows["noids"]["messages"])[0][0].startswith("call_")
    assert [c[0] for c in calls(rows["orphans"]["messages"])] == ["o1"]  # the unanswered o2 went
    assert results(rows["orphans"]["messages"]) == [("o1", "6")]  # the ghost result went
    assert [m["role"] for m in rows["trailing"]["messages"]][-1] == "assistant"
    assert len(rows["trailing"]["messages"]) == 4
    assert [c[0] for c in calls(rows["parallel"]["messages"])] == ["p1", "p2"]
    blob = json.dumps(rows["secret"])
    assert OPENAI_KEY not in blob and AWS_KEY not in blob and BEARER not in blob
    assert "[REDACTED:openai]" in blob and "[REDACTED:aws]" in blob and "Bearer [REDACTED:bearer]" in blob


def check_report(c: Curated, out: Path, fmt: str) -> dict[str, Any]:
    side = json.loads(Path(f"{out}.export.json").read_text())
    n = len(c.accepted)
    assert side["format"] == fmt and side["source_kind"] == "curate"
    assert side["counts"]["read"] == n and side["counts"]["written"] == n - 3
    assert side["counts"]["set_aside"] == 1 and side["counts"]["dropped_errored"] == 1
    assert side["counts"]["dropped_no_answer"] == 1 and side["counts"]["trailing_turns_trimmed"] == 2
    assert side["counts"]["orphan_calls_removed"] == 1 and side["counts"]["orphan_results_removed"] == 1
    assert side["counts"]["call_ids_minted"] == 1 and side["counts"]["result_ids_filled"] == 1
    assert {d["id"]: d["rule"] for d in side["dropped"]} == DROPPED
    [aside] = side["set_aside"]
    acc = c.dir / "accepted.jsonl"
    line = next(i for i, raw in enumerate(acc.read_text().splitlines(), 1) if json.loads(raw)["id"] == "image")
    assert aside["id"] == "image" and aside["line"] == line
    assert aside["reason"].startswith(f"{acc}:{line}: {fmt}: messages[0].content[1]: a 'image_url' part")
    assert side["redacted"]["by_kind"] == {"aws": 1, "bearer": 1, "openai": 1}
    assert {(w["id"], w["path"]) for w in side["redacted"]["where"]} == {
        ("secret", "messages[0].content"), ("secret", "messages[1].tool_calls[0].function.arguments.header")}
    assert OPENAI_KEY not in json.dumps(side)
    return side


def test_openai_ft_loads_back_with_datasets(curated: Curated, tmp_path: Path) -> None:
    out = tmp_path / "ft.jsonl"
    report = export_run(curated.dir, to="openai-ft", out=out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(set(r) <= {"messages", "tools"} for r in lines)
    ds = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "c"))
    check_rows(curated, dict(zip(kept_ids(curated), ds, strict=True)))
    assert ds[0]["tools"][0]["function"]["name"] == "calculator"
    roles = [m["role"] for m in dict(zip(kept_ids(curated), ds, strict=True))["roles"]["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "assistant"]
    assert check_report(curated, out, "openai-ft")["counts"]["developer_as_system"] == 1
    assert report.counts["written"] == len(ds)


@pytest.mark.parametrize("suffix", ["", ".parquet"])
def test_hf_loads_back_from_disk_and_parquet(curated: Curated, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"hf{suffix}"
    export_run(curated.dir, to="hf", out=out)
    if suffix:
        ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "c"))
    else:
        ds = datasets.load_from_disk(str(out))
    assert set(ds.column_names) == {"id", "task_id", "messages", "tools"}
    # arguments and tools are objects (datasets' Json type, in parquet too), as pool.jsonl holds them
    assert isinstance(ds.features["tools"], datasets.Json)
    check_rows(curated, {r["id"]: r for r in ds})
    assert ds[0]["tools"][0]["function"]["name"] == "calculator"
    assert all(isinstance(tc["function"]["arguments"], dict) for r in ds for m in r["messages"]
               for tc in m["tool_calls"] or [])
    check_report(curated, out, "hf")


def sharegpt_checks(curated: Curated, rows: list[dict[str, Any]]) -> None:
    by_id = {r["id"]: r for r in rows}
    assert list(by_id) == kept_ids(curated)
    for cid, row in by_id.items():
        conv = row["conversations"]
        assert [t["from"] for t in conv[:1]] == ["human"] and conv[-1]["from"] == "gpt"
        got = []
        for turn in conv:
            if turn["from"] == "function_call":
                v = json.loads(turn["value"])
                got += [(x["name"], x["arguments"]) for x in (v if isinstance(v, list) else [v])]
        want = [(n, a) for _, n, a in calls(curated.accepted[cid]["messages"])
                if cid != "orphans" or a != {"expression": "3*2"}]  # the unanswered call went
        assert got == want or cid == "secret"  # (its arguments were redacted)
    par = [t for t in by_id["parallel"]["conversations"] if t["from"] == "observation"]
    assert [json.loads(t["value"]) for t in par] == [["4", "10"]]
    assert by_id["roles"]["system"] == "You are careful.\n\nBe brief."
    assert json.loads(by_id["parallel"]["tools"])[0]["name"] == "calculator"


def test_sharegpt_and_llamafactory_load_back(curated: Curated, tmp_path: Path) -> None:
    sg, lf = tmp_path / "sg.jsonl", tmp_path / "lf"
    export_run(curated.dir, to="sharegpt", out=sg)
    export_run(curated.dir, to="llamafactory", out=lf, name="agent_sft")
    ds = datasets.load_dataset("json", data_files=str(sg), split="train", cache_dir=str(tmp_path / "c"))
    sharegpt_checks(curated, list(ds))
    side = check_report(curated, sg, "sharegpt")
    assert side["counts"]["text_beside_calls_dropped"] == 1  # "Let me compute." beside the call
    info = json.loads((lf / "dataset_info.json").read_text())
    assert info["agent_sft"]["file_name"] == "agent_sft.jsonl" and info["agent_sft"]["formatting"] == "sharegpt"
    assert info["agent_sft"]["columns"] == {"messages": "conversations", "system": "system", "tools": "tools"}
    assert (lf / "agent_sft.jsonl").read_text() == sg.read_text()
    check_report(curated, lf, "llamafactory")


def test_hygiene_can_be_turned_off(curated: Curated, tmp_path: Path) -> None:
    off = Hygiene(drop_errored=False, trim_trailing_user=False, tool_ids="off", require_answer=False,
                  redact=False)
    out = tmp_path / "raw.jsonl"
    r = export_run(curated.dir, to="openai-ft", out=out, hygiene=off)
    assert r.counts["written"] == len(curated.accepted) - 1 and not r.redacted  # only the image is set aside
    assert OPENAI_KEY in out.read_text()
    assert not any(k.startswith("dropped_") for k in r.counts)


def test_max_tokens_by_estimate_and_by_tokenizer(curated: Curated, tmp_path: Path) -> None:
    r = export_run(curated.dir, to="openai-ft", out=tmp_path / "a.jsonl", hygiene=Hygiene(max_tokens=400))
    assert r.counts["dropped_too_long"] == 1 and {d["id"] for d in r.dropped} == {"long", *DROPPED}
    [long] = [d for d in r.dropped if d["id"] == "long"]
    assert long["detail"].endswith("tokens > 400") and r.tokens == "estimate: ceil(chars / 4)"
    est = int(long["detail"].split()[0])
    assert 750 < est < 1000  # ~3,100 characters / 4
    pytest.importorskip("transformers")
    from tgrs_agents.student import tiny

    tiny.train_tokenizer(["What is 6 + 6?"]).save_pretrained(tmp_path / "tok")  # one token per character
    r = export_run(curated.dir, to="openai-ft", out=tmp_path / "b.jsonl",
                   hygiene=Hygiene(max_tokens=2000, tokenizer=str(tmp_path / "tok")))
    [long] = [d for d in r.dropped if d["id"] == "long"]
    assert int(long["detail"].split()[0]) > 3000 and r.tokens == f"tokenizer {tmp_path / 'tok'}"


def test_a_bad_record_is_set_aside_with_file_and_line_and_never_stops_the_export(curated: Curated,
                                                                               tmp_path: Path) -> None:
    src = tmp_path / "mixed.jsonl"
    good = (curated.dir / "accepted.jsonl").read_text().splitlines()[:3]
    src.write_text("\n".join([good[0], "{not json", good[1], '{"id": "r", "messages": [{"role": "robot"}]}',
                              good[2]]) + "\n")
    r = export_run(src, to="hf", out=tmp_path / "hf")
    assert r.counts["written"] == 3 and r.counts["set_aside"] == 2
    assert [(s["line"], s["reason"].split(": ")[0]) for s in r.set_aside] == [(2, f"{src}:2"), (4, f"{src}:4")]
    assert "field 'messages[0].role'" in r.set_aside[1]["reason"]


def test_a_loop_directory_exports_a_rounds_pool(curated: Curated, tmp_path: Path) -> None:
    recs = [curated.accepted[i] for i in kept_ids(curated)[:4]]
    for k, pool in ((1, recs[:2]), (2, recs)):
        (tmp_path / f"round-{k}").mkdir()
        (tmp_path / f"round-{k}" / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    cands = [{**recs[3], "metadata": {"stop": "error"}}]
    (tmp_path / "round-2" / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cands))
    last = export_run(tmp_path, to="openai-ft", out=tmp_path / "last.jsonl")
    assert (last.kind, last.round, last.counts["written"], last.counts["dropped_errored"]) == ("loop", 2, 3, 1)
    first = export_run(tmp_path, to="openai-ft", out=tmp_path / "first.jsonl", round=1)
    assert (first.round, first.counts["written"]) == (1, 2)


def test_the_command_line_prints_the_summary_and_names_errors(curated: Curated, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.jsonl"
    assert cli_main(["export", str(curated.dir), "--to", "openai-ft", "--out", str(out), "--max-tokens", "400",
                     "--tool-ids", "drop"]) == 0
    text = capsys.readouterr().out
    n = len(curated.accepted)
    assert f"read {n}, written {n - 5}, set aside 1, dropped 4" in text
    assert "errored 1" in text and "no_answer 1" in text and "too_long 1" in text
    assert "unpaired_tool_calls 1" in text and "secrets redacted: 3 (aws 1, bearer 1, openai 1)" in text
    assert OPENAI_KEY not in text and f"report: {out}.export.json" in text
    assert cli_main(["export", str(tmp_path / "nope"), "--to", "hf", "--out", str(tmp_path / "x")]) == 2
    assert f"{tmp_path / 'nope'}: no such file or directory" in capsys.readouterr().err


def test_sft_trainer_takes_the_hf_export_unchanged(curated: Curated, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from tgrs_agents.loop.distill import SFTSettings, trl_config
    from tgrs_agents.student import tiny

    export_run(curated.dir, to="hf", out=tmp_path / "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    tok = tiny.train_tokenizer([json.dumps(r) for r in ds])
    base = tiny.save(tiny.build_model(tok, seed=0), tok, tmp_path / "base")
    args = trl_config(SFTSettings(steps=2, batch_size=4), tmp_path / "trl", use_cpu=True, bf16=False)
    args.assistant_only_loss = True  # the loss mask comes from the chat template, tool calls included
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(base))
    out = trainer.train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)
    row = trainer.train_dataset[0]
    trained = tok.decode([i for i, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100])
    # the arguments are objects: the tiny template's compact call, what the project's SFT trains on
    expr = next(tc["function"]["arguments"]["expression"] for m in ds[0]["messages"] for tc in m["tool_calls"] or [])
    assert trained.startswith(f"<|call|>calculator {expr}<|end|>") and trained.endswith("<|end|>")


def test_errors_are_found_in_an_input_of_another_format_by_the_ids_its_reader_minted(tmp_path: Path) -> None:
    """A curate input without ids (OpenAI fine-tuning JSONL): the reader mints ids, accepted.jsonl keeps
    no metadata, and the export re-reads the input with the same reader to find the errored trace."""
    recs = [{k: v for k, v in r.items() if k not in ("id", "task_id")}
            for r in HANDMADE if r["id"] in ("noids", "errored", "parallel")]
    data = tmp_path / "ft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    summary = asyncio.run(curate(data, panel, tmp_path / "run", options=CurateOptions(cache=False),
                                 input_format="openai-ft"))
    assert summary["accepted"] == 3 and summary["input_format"] == "openai-ft"
    r = export_run(tmp_path / "run", to="openai-ft", out=tmp_path / "out.jsonl")
    assert (r.counts["written"], r.counts["dropped_errored"]) == (2, 1)
