"""What the budget and dry-run tests share: a small loop whose panel is one API judge on the loopback
stand-in (priced), scripted rollouts (right when the sample index is even), and an untrained tiny
student written as round 0, so a round costs seconds and every judge call is a real HTTP request."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tgrs_agents.loop.config import LoopConfig
from tgrs_agents.loop.rounds import ExpertIteration
from tgrs_agents.loop.stages import WarmStart

KEY_ENV, KEY = "TGRS_TEST_LOOP_KEY", "sk-test-loop-5d1e2f3a4b"
PRICE_IN, PRICE_OUT = 2.0, 8.0


def rollouts(model: Any, tasks: list, n: int, temperature: float, prefix: str) -> tuple[list[dict], Any]:
    from tgrs_agents.tasks.arithmetic_data import trajectory

    recs = []
    for t in tasks:
        expr = t.messages[0].text.removeprefix("What is ").removesuffix("?")
        for j in range(n):
            rec = trajectory(j, random.Random(f"{prefix}{t.id}-{j}"), task_id=t.id, expr=expr, value=t.reference,
                             flavour="good" if j % 2 == 0 else "wrong_copy")
            recs.append({**rec, "id": f"{prefix}{t.id}-s{j}"})
    return recs, SimpleNamespace(tokens_per_s=1.0, generated_tokens=10 * len(recs))


def write_panel(tmp_path: Path, url: str, max_tokens: int = 24) -> Path:
    """One priced judge; ``max_tokens`` near its real answers (~21 tokens) keeps reservations near the cost."""
    path = tmp_path / "panel-api.toml"
    path.write_text(f'''policy = "unanimous"
[[teacher]]
name = "gpt"
kind = "openai"
model = "gpt-judge-test"
base_url = "{url}"
api_key_env = "{KEY_ENV}"
rubric = "The final answer must equal the reference."
max_tokens = {max_tokens}
timeout_s = 5.0
price_input_per_mtok = {PRICE_IN}
price_output_per_mtok = {PRICE_OUT}
''')
    return path


def config(tmp_path: Path, panel: Path, **kw: Any) -> LoopConfig:
    fields: dict[str, Any] = dict(rounds=2, eval_k=2, tasks={"n_train": 8, "n_eval": 4}, generate={"n": 2},
                                  sft={"steps": 2, "batch_size": 4}, panel={"file": str(panel)},
                                  base_dir=str(tmp_path))
    fields.update(kw)
    return LoopConfig(**fields)


def loop(cfg: LoopConfig, out: Path, ledger: Path, **kw: Any) -> ExpertIteration:
    """The loop over ``out`` with scripted rollouts; round 0 (an untrained tiny student) made once."""
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer

    it = ExpertIteration(cfg, out, log=kw.pop("log", lambda s: None), live=False, cache_path=str(ledger), **kw)
    it._rollouts = rollouts  # type: ignore[method-assign]
    if not (out / "round-0" / "warm_start.done.json").exists():
        it.claim()  # a directory with rounds needs its run.json
        train, held = it.tasks()
        recs, _ = rollouts(None, train + held, 2, 1.0, "corpus-")
        tok = train_tokenizer([m["content"] or "" for r in recs for m in r["messages"]] + ["calculator 0123456789"])
        save(build_model(tok, seed=0), tok, it.model_dir(0))
        marker = WarmStart(seed_examples=0, sft_tokens_per_s=0.0, sft_backend="none", sft_train_s=0.0,
                           final_loss=None)
        (out / "round-0" / "warm_start.done.json").write_text(json.dumps(marker.to_json()))
    return it


def judge_requests(srv: Any) -> int:
    return sum(1 for r in srv.requests if r["path"] == "/v1/chat/completions")


def write_config(tmp_path: Path, panel: Path, extra: str = "") -> Path:
    """The TOML twin of :func:`config` (the same fingerprint), for the command line."""
    path = tmp_path / "loop.toml"
    path.write_text(f'''rounds = 2
eval_k = 2
[tasks]
n_train = 8
n_eval = 4
[generate]
n = 2
[sft]
steps = 2
batch_size = 4
[panel]
file = "{panel}"
{extra}''')
    return path
