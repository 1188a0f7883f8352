"""examples/sql-agent: a user environment (a SQLite database per rollout, a read-only ``sql`` tool), its
task files and panels, and the example's loop config run for two rounds on CPU."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.generate import SamplingParams, Turn, rollout
from tgrs_agents.loop.config import load_run_config
from tgrs_agents.loop.rounds import ExpertIteration
from tgrs_agents.tasks.env import load_tool_factory
from tgrs_agents.types import Candidate, Task

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sql-agent"


def example_module(name: str) -> Any:
    path = EXAMPLE / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"sql_agent_example_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


sql_tools = example_module("sql_tools")
checks = example_module("checks")


def task(seed: int = 0) -> Task:
    return Task(id=f"t{seed}", messages=[{"role": "user", "content": "q"}], metadata={"db_seed": seed})


# ----- the tool ---------------------------------------------------------------------------------------

def test_sql_tool_refuses_writes_and_leaves_the_data_alone() -> None:
    db = sql_tools.SqlDatabase(seed=3)
    before = db.sql("SELECT COUNT(*), SUM(salary) FROM employees")
    for write in ("DELETE FROM orders", "UPDATE employees SET salary = 1", "INSERT INTO orders VALUES (99, 'x', 1, 1)",
                  "DROP TABLE employees", "CREATE TABLE x (a)", "ALTER TABLE orders ADD c", "PRAGMA query_only = 0",
                  "ATTACH ':memory:' AS other", "BEGIN"):
        assert db.sql(write).startswith("error: read-only"), write
    assert db.sql("SELECT COUNT(*), SUM(salary) FROM employees") == before
    assert db.sql("SELECT COUNT(*) FROM orders") == "20"
    assert db.sql("SELECT 1; DELETE FROM orders").startswith("error: You can only execute one statement")
    assert db.sql("SELECT nope FROM employees") == "error: no such column: nope"
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT MAX(x) FROM c"
    assert db.sql(runaway) == "error: query interrupted (too much work)"  # stops itself: it runs on the event loop
    assert db.sql("SELECT COUNT(*) FROM orders") == "20"  # ... and the next query runs again


def test_sql_tool_answers_in_compact_truncated_text() -> None:
    db = sql_tools.SqlDatabase(seed=3, max_rows=3, max_chars=60)
    assert db.sql("SELECT COUNT(*) FROM employees") == "12"  # one value: just the value
    assert db.sql("SELECT 1.0 / 3") == "0.333333" and db.sql("SELECT NULL") == "NULL"  # floats: 6 digits
    assert db.sql("SELECT name FROM employees WHERE salary < 0") == "(no rows)"
    two = db.sql("SELECT name, dept FROM employees ORDER BY id LIMIT 2").splitlines()
    assert two[0] == "name|dept" and len(two) == 3 and two[1].startswith("Ann|")
    many = db.sql("SELECT id FROM employees ORDER BY id").splitlines()
    assert many == ["id", "1", "2", "3", "... (first 3 rows)"]  # cut at max_rows, and says so
    wide = db.sql("SELECT name, dept, salary, name || dept AS both FROM employees ORDER BY id")
    assert len(wide) == 60 and wide.endswith(" [truncated]")  # cut at max_chars, and says so


def test_each_rollout_gets_its_own_database_and_state() -> None:
    """Two instances made by the factory for the same task share nothing: scratch tables, query budget."""
    factory = load_tool_factory("sql_tools.py:make_tools", base_dir=EXAMPLE)
    (a,), (b,) = factory.make(task(7)), factory.make(task(7))
    assert a.name == "sql" and a.parameters["required"] == ["query"]
    assert a.fn("SELECT SUM(salary) FROM employees") == b.fn("SELECT SUM(salary) FROM employees")  # same seed
    assert a.fn("CREATE TEMP TABLE mine AS SELECT name FROM employees WHERE dept = 'Ops'") == "ok"
    assert a.fn("INSERT INTO mine VALUES ('Zed')") == "ok"  # a rollout's scratch is writable
    assert a.fn("SELECT COUNT(*) FROM mine") != "error: no such table: mine"
    assert b.fn("SELECT COUNT(*) FROM mine") == "error: no such table: mine"  # ... and its own
    assert a.fn.__self__.queries == 4 and b.fn.__self__.queries == 2
    c = factory.make(task(8))[0]  # another task: another seed, other data
    assert c.fn("SELECT group_concat(dept) FROM employees") != b.fn("SELECT group_concat(dept) FROM employees")
    budget = sql_tools.SqlDatabase(max_queries=2)
    assert budget.sql("SELECT 1") == "1" and budget.sql("SELECT 2") == "2"
    assert budget.sql("SELECT 3") == "error: query budget used up (2 per episode)"
    assert sql_tools.SqlDatabase(max_queries=2).sql("SELECT 3") == "3"  # a fresh one has its whole budget


def test_close_releases_the_connection() -> None:
    tool = load_tool_factory("sql_tools.py:make_tools", base_dir=EXAMPLE).make(task())[0]
    db = tool.fn.__self__
    assert tool.close is not None
    tool.close()
    tool.close()  # twice is harmless
    assert db.closed and tool.fn("SELECT 1") == "error: the database is closed"
    with pytest.raises(Exception, match="closed database"):
        db.conn.execute("SELECT 1")


class ScratchThenAnswer:
    """Each rollout makes a TEMP table named ``t`` and counts it: in a shared database the second
    rollout's CREATE would fail ('table t already exists')."""

    async def complete(self, conversations: list[list[dict[str, Any]]], tools: Any, params: Any, *,
                       max_new_tokens: Any = None) -> list[Turn]:
        out = []
        for conv in conversations:
            queries = ["CREATE TEMP TABLE t AS SELECT name FROM employees", "SELECT COUNT(*) FROM t"]
            done = [m for m in conv if m["role"] == "tool"]
            if len(done) < len(queries):
                call = {"type": "function", "function": {"name": "sql",
                                                         "arguments": json.dumps({"query": queries[len(done)]})}}
                out.append(Turn("", [call], "tool_calls", 5))
            else:
                out.append(Turn(f"Answer: {done[-1]['content']}", None, "stop", 3))
        return out

    async def aclose(self) -> None:
        return None


def test_rollouts_run_against_their_own_databases() -> None:
    factory = load_tool_factory("sql_tools.py:make_tools", base_dir=EXAMPLE)
    recs = asyncio.run(rollout(ScratchThenAnswer(), [task(1), task(2)], n=3, tools=factory,
                               params=SamplingParams(n=3), max_turns=4, max_tokens=100))
    assert len(recs) == 6
    for r in recs:
        assert [m["content"] for m in r["messages"] if m["role"] == "tool"] == ["ok", "12"]
        assert r["messages"][-1]["content"] == "Answer: 12"


# ----- the task files and the verifiers -------------------------------------------------------------

def test_task_files_are_what_make_tasks_writes_and_their_references_are_right() -> None:
    make = example_module("make_tasks")
    train, held, seed = make.build()
    for name, rows in (("tasks-train.jsonl", train), ("tasks-eval.jsonl", held), ("seed.jsonl", seed)):
        assert (EXAMPLE / name).read_text() == make.jsonl(rows), f"{name} is stale: run make_tasks.py"
    assert len(train) >= 30 and len(held) == make.N_EVAL
    assert not {t["messages"][0]["content"] for t in train} & {t["messages"][0]["content"] for t in held}
    for t in [*train, *held]:
        db = sql_tools.SqlDatabase(seed=t["metadata"]["db_seed"])
        assert make.answer(db.sql(t["metadata"]["sql"])) == t["reference"]
        db.close()


def test_seed_demonstrations_fit_the_tiny_student() -> None:
    """Every demonstration fits the tiny student's 128 positions, in characters its tokenizer knows."""
    from tgrs_agents.chat import template_messages
    from tgrs_agents.student.tiny import train_tokenizer

    rows = [json.loads(line) for line in (EXAMPLE / "seed.jsonl").read_text().splitlines()]
    tok = train_tokenizer([m.get("content") or "" for r in rows for m in r["messages"]])
    for r in rows:
        ids = tok.apply_chat_template(template_messages(r["messages"]), tokenize=True, return_dict=True)["input_ids"]
        assert len(ids) <= 128 and tok.unk_token_id not in ids, r["id"]


def cand(answer: str, *tool: tuple[str, str], reference: Any = 4) -> Candidate:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "How many?"}]
    for i, (name, result) in enumerate(tool):
        msgs += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": f"c{i}", "content": result}]
    return Candidate(id="x", messages=[*msgs, {"role": "assistant", "content": answer}], reference=reference)


def test_verifiers_correct_and_grounded() -> None:
    assert checks.correct(cand("Answer: 4"))[0]  # right, even without a query
    assert not checks.grounded(cand("Answer: 4"))[0]  # ... but guessed: not kept for training
    assert checks.grounded(cand("Answer: 4", ("sql", "4")))[0]
    assert checks.grounded(cand("Answer: bob", ("sql", "name|dept\nBob|Ops")))[0]
    assert not checks.grounded(cand("Answer: 4", ("sql", "error: no such table: x")))[0]
    assert not checks.grounded(cand("Answer: 4", ("calc", "4")))[0]  # another tool's result is not a query
    assert not checks.correct(cand("Answer: 5", ("sql", "5")))[0]
    assert checks.correct(cand("Answer: 4.0"))[0] and not checks.correct(cand("4"))[0]


def test_the_loop_reads_the_example(tmp_path: Path) -> None:
    cfg = load_run_config(EXAMPLE / "loop.toml")
    train, held = ExpertIteration(cfg, tmp_path / "run", log=lambda s: None).tasks()  # tools and panel checked
    assert len(train) >= 30 and len(held) == 16
    assert cfg.tasks.tools == "sql_tools.py:make_tools" and cfg.eval.panel == "eval-panel.toml"


def test_warm_start_file_is_needed_for_other_tasks_and_enters_the_fingerprint(tmp_path: Path) -> None:
    """``[warm_start] file``: without it the tiny student has demonstrations for arithmetic tasks only
    (a ConfigError naming the field, not a KeyError); with it, the file's content is in the fingerprint."""
    from tgrs_agents.errors import ConfigError, InputError
    from tgrs_agents.loop.fingerprint import identity

    cfg = load_run_config(EXAMPLE / "loop.toml")
    assert identity(cfg, "filtered")["warm_start"]["file"].startswith("seed.jsonl (sha256 ")
    bare = cfg.model_copy(update={"warm_start": cfg.warm_start.model_copy(update={"file": None})})
    assert "file" not in identity(bare, "filtered")["warm_start"]  # runs made before it keep their fingerprint
    loop = ExpertIteration(bare, tmp_path / "run", log=lambda s: None)
    with pytest.raises(ConfigError, match="demonstrations for arithmetic tasks only") as e:
        loop.warm_start(*loop.tasks())
    assert e.value.field == "warm_start.file" and e.value.file == str(EXAMPLE / "loop.toml")
    missing = cfg.model_copy(update={"warm_start": cfg.warm_start.model_copy(update={"file": "nope.jsonl"})})
    loop = ExpertIteration(missing, tmp_path / "run2", log=lambda s: None)
    with pytest.raises(ConfigError, match="warm-start file not found"):
        loop.warm_start(*loop.tasks())
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\n\n{"id": "no messages"}\n')
    with pytest.raises(InputError, match="needs a list of 'messages'") as bad:
        loop.seed_file(str(tmp_path / "bad.jsonl"), random.Random(0), 5)
    assert bad.value.line == 3
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="not valid JSON"):
        loop.seed_file(str(tmp_path / "bad.jsonl"), random.Random(0), 5)


# ----- the example end to end -----------------------------------------------------------------------

SPY = '''
import importlib.util, json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sql_agent_checks_for_spy", Path(__file__).parent / "checks.py")
_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_checks)

def correct(candidate):
    ok, why = _checks.correct(candidate)
    with (Path(__file__).parent / "eval-calls.jsonl").open("a") as f:
        f.write(json.dumps({"id": candidate.id, "task_id": candidate.task_id, "ok": ok}) + "\\n")
    return ok, why
'''


def small(cfg: Any) -> Any:
    """The example's config with CPU-test sizes (what a user would change in loop.toml)."""
    return cfg.model_copy(update={
        "eval_k": 2,
        "tasks": cfg.tasks.model_copy(update={"n_eval": 8}),
        "warm_start": cfg.warm_start.model_copy(update={"steps": 120, "batch_size": 16, "lr": 3e-3}),
        "generate": cfg.generate.model_copy(update={"n": 2}),
        "sft": cfg.sft.model_copy(update={"steps": 8, "batch_size": 8}),
    })


@pytest.mark.slow
def test_the_example_runs_two_rounds_on_cpu(tmp_path: Path) -> None:
    ex = tmp_path / "sql-agent"
    shutil.copytree(EXAMPLE, ex, ignore=shutil.ignore_patterns("__pycache__"))
    (ex / "spy_checks.py").write_text(SPY)  # the eval panel's verifier, logging what it decided
    panel = (ex / "eval-panel.toml").read_text()
    (ex / "eval-panel.toml").write_text(panel.replace('"checks.py:correct"', '"spy_checks.py:correct"'))
    cfg = small(load_run_config(ex / "loop.toml", rounds=2))
    out = tmp_path / "run"
    summary = ExpertIteration(cfg, out, log=lambda s: None, live=False).run()

    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]  # both rounds completed
    demos = n_train = len((ex / "tasks-train.jsonl").read_text().splitlines())  # one demonstration each
    assert summary["rounds"][0]["warm_start"]["seed_examples"] == demos  # the example's own demonstrations
    for rnd in (1, 2):
        assert (out / f"round-{rnd}" / "eval.done.json").exists()
        recs = [json.loads(line) for line in (out / f"round-{rnd}" / "candidates.jsonl").read_text().splitlines()]
        assert len(recs) == n_train * 2
        sql_ids = {tc["id"] for r in recs for m in r["messages"] if m["role"] == "assistant"
                   for tc in m.get("tool_calls") or [] if tc["function"]["name"] == "sql"}
        answered = [m["content"] for r in recs for m in r["messages"]
                    if m["role"] == "tool" and m["tool_call_id"] in sql_ids]
        assert answered, f"round {rnd}: the sql tool was never called"
        assert any(not a.startswith("error") for a in answered), f"round {rnd}: no query ever succeeded"

    # the eval panel decided pass@1: it judged every round's held-out samples (and nothing else), and
    # each task's count of right samples agrees with its decisions
    calls = [json.loads(line) for line in (ex / "eval-calls.jsonl").read_text().splitlines()]
    assert {c["id"].split("-eval-")[0] for c in calls} == {"r0", "r1", "r2"}
    saved = json.loads((out / "summary.json").read_text())
    for rnd, entry in enumerate(saved["rounds"]):
        rows = [json.loads(line) for line in (out / f"round-{rnd}" / "eval.jsonl").read_text().splitlines()]
        assert len(rows) == 8
        for row in rows:
            accepted = [c for c in calls if c["id"].startswith(f"r{rnd}-eval-") and c["task_id"] == row["task_id"]
                        and c["ok"]]
            assert (row["correct"] > 0) == bool(accepted) and row["correct"] >= len(accepted)
        assert entry["pass@1"] == pytest.approx(sum(r["correct"] / 2 for r in rows) / len(rows), abs=1e-4)
