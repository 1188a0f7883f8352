"""A user environment for ``tgrs run``: a small SQLite database per rollout and a read-only ``sql`` tool.

``[tasks] tools = "sql_tools.py:make_tools"`` in ``loop.toml`` names :func:`make_tools`. The loop calls
it once per rollout with that rollout's task, so every rollout gets its *own* in-memory database,
seeded from the task's ``metadata.db_seed`` (each task has its own data, so an answer cannot be
remembered from another task: it has to be queried), and closed when the rollout ends.

The tool is read-only on the seeded tables (a SQLite authorizer allows reads only), but a rollout may
keep scratch results in ``TEMP`` tables and views: that state lives in the rollout's own connection,
so no other rollout sees it. A query that runs too long is interrupted (the tool runs on the event
loop, where the loop's per-call timeout cannot stop a sync function, so the tool stops itself), and
each rollout has a query budget. Results come back as compact text (``col|col`` lines), cut at
``max_rows`` rows and ``max_chars`` characters: a small model's context is short.

Copy this file and change :func:`seed_database` and :data:`SCHEMA` for your own data; nothing else
here knows what the tables hold.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

from tgrs_agents.tasks.env import Tool

SCHEMA = """
CREATE TABLE departments (name TEXT PRIMARY KEY, city TEXT, budget INTEGER);
CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT, dept TEXT, salary INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, employee TEXT, amount INTEGER, month INTEGER);
"""
TABLES = "departments(name, city, budget), employees(id, name, dept, salary), orders(id, employee, amount, month)"
DEPARTMENTS = ("Sales", "Ops", "Tech", "HR")
CITIES = ("Paris", "Lyon", "Berlin", "Oslo", "Rome")
EMPLOYEES = ("Ann", "Bob", "Cai", "Dev", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lu")
MONTHS = 6

SQL_SCHEMA: dict[str, Any] = {"type": "function", "function": {
    "name": "sql",
    "description": f"Run one read-only SQLite query. Tables: {TABLES}. Rows come back as 'a|b' lines.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "one SELECT statement"}},
                   "required": ["query"]}}}

# What a query may do: read, and write only its own TEMP scratch objects. Everything else is refused.
_READ = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_TEMP_DDL = {sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_CREATE_TEMP_VIEW, sqlite3.SQLITE_DROP_TEMP_TABLE,
             sqlite3.SQLITE_DROP_TEMP_VIEW}
_TEMP_DML = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
_PRAGMAS = {"table_info", "table_list"}  # schema look-ups an agent may need


def seed_database(conn: sqlite3.Connection, seed: int) -> None:
    """Fill the tables from ``seed`` (the same seed, the same rows, on every machine)."""
    rng = random.Random(seed)
    conn.executescript(SCHEMA)
    budgets = rng.sample(range(10, 99), len(DEPARTMENTS))
    conn.executemany("INSERT INTO departments VALUES (?, ?, ?)",
                     [(d, rng.choice(CITIES), b * 1000) for d, b in zip(DEPARTMENTS, budgets, strict=True)])
    salaries = rng.sample(range(30, 100), len(EMPLOYEES))  # distinct: "who earns the most" has one answer
    depts = [*DEPARTMENTS, *(rng.choice(DEPARTMENTS) for _ in EMPLOYEES[len(DEPARTMENTS):])]
    rng.shuffle(depts)
    staff = zip(EMPLOYEES, depts, salaries, strict=True)
    conn.executemany("INSERT INTO employees VALUES (?, ?, ?, ?)",
                     [(i + 1, n, d, s * 100) for i, (n, d, s) in enumerate(staff)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                     [(i + 1, rng.choice(EMPLOYEES), rng.randint(1, 99) * 10, rng.randint(1, MONTHS))
                      for i in range(20)])


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return format(v, ".6g")
    return str(v)


def format_rows(columns: list[str], rows: list[tuple[Any, ...]], more: bool, max_chars: int) -> str:
    """Compact text: one value alone; else a ``col|col`` header and ``a|b`` lines; cut at ``max_chars``."""
    if not rows:
        return "(no rows)"
    if len(columns) == 1 and len(rows) == 1 and not more:
        text = _cell(rows[0][0])
    else:
        text = "\n".join(["|".join(columns), *("|".join(_cell(v) for v in r) for r in rows)])
        if more:
            text += f"\n... (first {len(rows)} rows)"
    cut = " [truncated]"
    return text if len(text) <= max_chars else text[: max_chars - len(cut)] + cut


class SqlDatabase:
    """One rollout's database and its ``sql`` tool; :attr:`queries` counts the queries it ran."""

    def __init__(self, seed: int = 0, *, max_rows: int = 8, max_chars: int = 200, max_queries: int = 20,
                 max_steps: int = 200_000) -> None:
        self.seed, self.max_rows, self.max_chars, self.max_queries = seed, max_rows, max_chars, max_queries
        self.queries = 0
        self.closed = False
        self.conn = sqlite3.connect(":memory:", isolation_level=None)  # autocommit: no implicit BEGIN
        seed_database(self.conn, seed)
        self.conn.set_authorizer(self._authorize)
        self._steps, self._max_steps = 0, max_steps
        self.conn.set_progress_handler(self._progress, 1000)

    @staticmethod
    def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, _trigger: str | None) -> int:
        if action in _READ or action in _TEMP_DDL:
            return sqlite3.SQLITE_OK
        if action in _TEMP_DML and db == "temp":
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 in _PRAGMAS:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        self._steps += 1000
        return 1 if self._steps > self._max_steps else 0  # non-zero interrupts the query

    def sql(self, query: str) -> str:
        """Run one statement; errors and refusals come back as text the model can read."""
        if self.closed:
            return "error: the database is closed"
        if self.queries >= self.max_queries:
            return f"error: query budget used up ({self.max_queries} per episode)"
        self.queries += 1
        self._steps = 0
        try:
            cur = self.conn.execute(query)
            rows = cur.fetchmany(self.max_rows + 1)
        except sqlite3.DatabaseError as e:
            if "not authorized" in str(e):
                return "error: read-only: only SELECT (and TEMP tables or views for scratch) is allowed"
            if "interrupted" in str(e):
                return "error: query interrupted (too much work)"
            return f"error: {e}"
        except (sqlite3.Warning, ValueError) as e:  # two statements at once, a NUL in the text
            return f"error: {e}"
        columns = [d[0] for d in cur.description or ()]
        if not columns:
            return "ok"  # a TEMP table or view was made
        return format_rows(columns, rows[: self.max_rows], len(rows) > self.max_rows, self.max_chars)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()

    def tool(self) -> Tool:
        f = SQL_SCHEMA["function"]
        return Tool(f["name"], f["parameters"], self.sql, description=f["description"], close=self.close)


def make_tools(task: Any) -> list[Tool]:
    """The tools of one rollout: ``sql`` over a fresh database seeded from the task's ``db_seed``."""
    seed = int((getattr(task, "metadata", None) or {}).get("db_seed", 0))
    return [SqlDatabase(seed).tool()]
