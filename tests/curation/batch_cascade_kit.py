"""Shared by the batch-cascade tests and benchmarks/bench_batch.py: a verifier, then a paid judge (online or
``mode = "batch"``) pointed at the stand-in, and the run's outputs read back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tgrs_agents.testing.standin import default_brain

OA_ENV, AN_ENV = "TGRS_TEST_OA_KEY", "TGRS_TEST_AN_KEY"
OA_KEY, AN_KEY = "sk-test-oa-ba7c4ba7c4", "sk-test-an-ba7c4ba7c4"


def brain(prompt: str) -> dict[str, Any]:
    """The default brain, except that a correct answer whose reference is a multiple of 5 is rejected: the
    judge then decides something the verifier left open."""
    out = default_brain(prompt)
    ref = re.findall(r"<reference>(.*?)</reference>", prompt, re.S)
    if out["passed"] and ref and int(ref[-1].strip()) % 5 == 0:
        return {"score": 3, "passed": False, "rationale": "a multiple of five: suspicious"}
    return out


def write_panel(path: Path, srv: Any, provider: str = "openai", mode: str = "pointwise", **batch: Any) -> Path:
    judge = {"name": "judge", "kind": provider, "cost_rank": 10, "max_concurrency": 64, "timeout_s": 10,
             "rpm": 100_000}
    if provider == "openai":
        judge.update(model="gpt-4o-mini", base_url=srv.url_openai, api_key_env=OA_ENV, tpm=100_000_000)
    else:
        judge.update(model="claude-haiku-4-5", base_url=srv.url_anthropic, api_key_env=AN_ENV,
                     input_tpm=100_000_000, output_tpm=100_000_000)
    if mode != "pointwise":
        judge["mode"] = mode
    lines = ['policy = "unanimous"', "", "[[teacher]]", 'name = "answer"', 'kind = "final_answer"', "cost_rank = 0",
             "", "[[teacher]]", *(f"{k} = {json.dumps(v)}" for k, v in judge.items())]
    if batch:
        lines += ["", "[teacher.batch]", *(f"{k} = {json.dumps(v)}" for k, v in batch.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def ids(out: Path, name: str) -> set[str]:
    p = out / f"{name}.jsonl"
    return {json.loads(line)["id"] for line in p.read_text().splitlines()} if p.exists() else set()


def decisions(out: Path) -> dict[str, bool]:
    return {**{i: True for i in ids(out, "accepted")}, **{i: False for i in ids(out, "rejected")}}


def verdicts(out: Path) -> list[dict[str, Any]]:
    p = out / "verdicts.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def answered(srv: Any, since: int = 0) -> int:
    """Requests the stand-in answered (and so billed) in its batches, from the ``since``-th batch on. Paid twice
    = this minus the candidates that needed the judge (prompts alone cannot tell: candidates that differ only in
    what the prompt leaves out, tool-call ids say, share a prompt)."""
    return sum(kind == "ok" for b in list(srv.batches.all.values())[since:] for _, kind, _ in b.results)
