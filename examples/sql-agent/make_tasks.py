"""Write the example's task files: ``tasks-train.jsonl``, ``tasks-eval.jsonl`` and ``seed.jsonl``.

    python examples/sql-agent/make_tasks.py      # rewrites the three files (deterministic)

A task is one line of the project's task format (what ``tgrs run`` reads: ``id``, ``messages``,
``tools``, ``reference``, ``metadata``): a question about the database of its ``metadata.db_seed``,
the reference answer (found by running ``metadata.sql`` on that database, the same way the ``sql``
tool would), and the ``sql`` tool's schema. The held-out questions are worded differently from the
training ones (``tgrs run`` refuses held-out tasks that repeat training tasks).

``seed.jsonl`` holds one demonstration per training task (question, the reference query as an
``sql`` call, the tool's answer, ``Answer: X``): the tiny student's warm start
(``[warm_start] file``) learns the call format from it. Keep every line short: the tiny student
reads 128 characters.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # sql_tools.py sits beside this script
    sys.path.insert(0, str(HERE))
from sql_tools import DEPARTMENTS, EMPLOYEES, MONTHS, SQL_SCHEMA, SqlDatabase  # noqa: E402

N_EVAL = 16
SPLIT_SEED = 1


def questions() -> list[tuple[str, str]]:
    """(question, reference SQL) for every task, in a fixed order."""
    out: list[tuple[str, str]] = []
    for d in DEPARTMENTS:
        out += [(f"How many employees work in {d}?", f"SELECT COUNT(*) FROM employees WHERE dept='{d}'"),
                (f"What is the top salary in {d}?", f"SELECT MAX(salary) FROM employees WHERE dept='{d}'"),
                (f"Who earns the most in {d}?",
                 f"SELECT name FROM employees WHERE dept='{d}' ORDER BY salary DESC LIMIT 1"),
                (f"In which city is {d}?", f"SELECT city FROM departments WHERE name='{d}'")]
    for n in EMPLOYEES:
        out += [(f"How many orders did {n} place?", f"SELECT COUNT(*) FROM orders WHERE employee='{n}'"),
                (f"What did {n} sell in total?", f"SELECT SUM(amount) FROM orders WHERE employee='{n}'")]
    out += [(f"How many orders came in month {m}?", f"SELECT COUNT(*) FROM orders WHERE month={m}")
            for m in range(1, MONTHS + 1)]
    out += [(f"How many employees earn over {x}?", f"SELECT COUNT(*) FROM employees WHERE salary>{x}")
            for x in range(4000, 10000, 1000)]
    out += [("Which department has the largest budget?", "SELECT name FROM departments ORDER BY budget DESC LIMIT 1"),
            ("Which department has the smallest budget?", "SELECT name FROM departments ORDER BY budget LIMIT 1")]
    return out


def answer(text: str) -> int | float | str:
    """The reference as a JSON value: a number when the tool's text is one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(training tasks, held-out tasks, seed demonstrations)."""
    tasks = []
    for i, (q, sql) in enumerate(questions()):
        db = SqlDatabase(seed=1000 + i)
        try:
            result = db.sql(sql)
        finally:
            db.close()
        if result in ("NULL", "(no rows)") or result.startswith("error"):
            continue  # e.g. the total of someone who sold nothing in this database
        tasks.append({"id": f"sql-{i:03d}", "messages": [{"role": "user", "content": q}], "tools": [SQL_SCHEMA],
                      "reference": answer(result), "metadata": {"db_seed": 1000 + i, "sql": sql}})
    order = list(range(len(tasks)))
    random.Random(SPLIT_SEED).shuffle(order)
    held = sorted(order[:N_EVAL])
    train = [t for i, t in enumerate(tasks) if i not in held]
    seed = [demonstration(t) for t in train]
    return train, [tasks[i] for i in held], seed


def demonstration(task: dict[str, Any]) -> dict[str, Any]:
    """A right trajectory for ``task``: one query, its result, the answer."""
    call = {"id": "call_0", "type": "function",
            "function": {"name": "sql", "arguments": json.dumps({"query": task["metadata"]["sql"]})}}
    db = SqlDatabase(seed=task["metadata"]["db_seed"])
    try:
        result = db.sql(task["metadata"]["sql"])
    finally:
        db.close()
    return {"id": f"demo-{task['id']}", "task_id": task["id"], "tools": task["tools"], "messages": [
        *task["messages"], {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": result},
        {"role": "assistant", "content": f"Answer: {task['reference']}"}]}


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def main() -> None:
    train, held, seed = build()
    for name, rows in (("tasks-train.jsonl", train), ("tasks-eval.jsonl", held), ("seed.jsonl", seed)):
        (HERE / name).write_text(jsonl(rows))
        print(f"{name}: {len(rows)} lines")


if __name__ == "__main__":
    main()
