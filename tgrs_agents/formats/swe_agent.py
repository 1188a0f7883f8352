"""``swe-agent``: SWE-agent ``.traj`` files, and ``mini-swe-agent``: its trajectories (a bare JSON array
of messages, or ``{"messages", "info", "trajectory_format"}``). One file, one candidate.

SWE-agent's ``history`` is already OpenAI chat; a tool message names its call in a *list*
``tool_call_ids`` (the first becomes ``tool_call_id``, more are kept in ``metadata``). ``thought`` and
``action`` repeat what ``content`` and ``tool_calls`` hold and are not carried; ``info`` (exit status,
submission, model stats) goes to ``metadata``. mini-swe-agent's action is a fenced
``mswea_bash_command`` block in the assistant text: it stays text, as the model wrote it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Source, Unreadable, as_list, as_object, digest, records_source
from .stream import container

_DROP = {"thought", "action", "agent", "message_type", "tool_call_ids", "is_demo", "cache_control"}
_INFO = ("exit_status", "submission", "model_stats", "instance_id", "resolved")


def _messages(history: list[Any], field: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    extra_ids: dict[str, list[str]] = {}
    demos = 0
    for i, m in enumerate(history):
        m = as_object(m, f"{field}[{i}]")
        out = {k: v for k, v in m.items() if k not in _DROP}
        ids = m.get("tool_call_ids")
        if m.get("role") == "tool" and isinstance(ids, list) and ids:
            out["tool_call_id"] = ids[0]
            if len(ids) > 1:
                extra_ids[str(len(msgs))] = ids[1:]
        if m.get("is_demo"):
            demos += 1
        msgs.append(out)
    meta: dict[str, Any] = {}
    if extra_ids:
        meta["more_tool_call_ids"] = extra_ids
    if demos:
        meta["demonstration_messages"] = demos
    return msgs, meta


def _info(info: Any) -> dict[str, Any]:
    return {k: info[k] for k in _INFO if isinstance(info, dict) and k in info}


def convert_traj(doc: Any) -> dict[str, Any]:
    doc = as_object(doc)
    history = as_list(doc.get("history"), "history")
    msgs, meta = _messages(history, "history")
    meta.update(_info(doc.get("info")))
    meta["steps"] = len(doc.get("trajectory") or [])
    if doc.get("environment"):
        meta["environment"] = doc["environment"]
    rc = doc.get("replay_config")
    problem = rc.get("problem_statement") if isinstance(rc, dict) else None
    instance = problem.get("id") if isinstance(problem, dict) else None
    cid = instance or meta.get("instance_id") or "swe-agent-" + digest(history)
    return {"id": str(cid), "task_id": str(instance or cid), "messages": msgs, "metadata": meta}


def convert_mini(doc: Any) -> dict[str, Any]:
    if isinstance(doc, list):
        doc = {"messages": doc}
    doc = as_object(doc)
    raw = as_list(doc.get("messages"), "messages")
    msgs, meta = _messages(raw, "messages")
    for m in msgs:
        m.pop("extra", None)  # per-message timing/raw response the run logged; not trajectory
        if m.get("role") not in ("system", "user", "assistant", "tool"):
            raise Unreadable("messages", f"expected roles system, user, assistant or tool; got {m.get('role')!r}")
    meta.update(_info(doc.get("info")))
    meta["action_format"] = "mswea_bash_command"
    if doc.get("trajectory_format"):
        meta["trajectory_format"] = doc["trajectory_format"]
    cid = doc.get("instance_id") or meta.get("instance_id") or "mini-swe-agent-" + digest(raw)
    return {"id": str(cid), "messages": msgs, "metadata": meta}


def open_swe_agent(path: Path) -> Source:
    kind = container(path)
    return records_source(path, "document" if kind != "jsonl" else kind, convert_traj)


def open_mini(path: Path) -> Source:
    kind = container(path)
    return records_source(path, "document" if kind != "jsonl" else kind, convert_mini)
