"""``tau-bench``: tau-bench results, ``[{task_id, trial, reward, info, traj}]`` (a JSON array, streamed).

``traj`` is OpenAI chat already. The environment's ``reward`` is a recorded verdict: it is kept as
``metadata.reward`` (with ``trial`` and ``info``: the task, the user simulator's cost, the reward's
breakdown), so a ``metadata`` teacher with ``field = "reward"`` uses it as the free first stage of a
panel. The id is ``tau-<task_id>-trial-<trial>``; ``task_id`` groups the trials of one task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Source, as_list, as_object, digest, records_source
from .stream import container


def convert(doc: Any) -> dict[str, Any]:
    doc = as_object(doc)
    msgs = as_list(doc.get("traj"), "traj")
    task = doc.get("task_id")
    meta = {k: v for k, v in doc.items() if k not in ("traj", "task_id")}
    tid = str(task) if task is not None else "tau-" + digest(msgs)
    cid = f"tau-{tid}-trial-{doc.get('trial', 0)}"
    return {"id": cid, "task_id": tid, "messages": msgs, "metadata": meta}


def open_tau_bench(path: Path) -> Source:
    return records_source(path, container(path), convert)
