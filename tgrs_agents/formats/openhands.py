"""``openhands``: OpenHands event streams, as a list of events (a saved or replay trajectory: one
candidate) or as evaluation ``output.jsonl`` records ``{instance_id, instruction, history, metrics,
test_result, ...}`` (one candidate per line).

With function calling, each action event carries ``tool_call_metadata.model_response``, the raw
chat completion the agent got: the assistant message is taken from it as it is (content and
``tool_calls``, once per response however many actions it produced), and an observation with
``tool_call_metadata`` becomes the ``tool`` message for that ``tool_call_id``. Events without it
map by kind: the system and user messages, the agent's messages, an action as a tool call with an
id minted from the event id (its observation, found by ``cause``, as the result), and an error
observation as a user message (OpenHands shows it to the model that way). State changes and
``recall`` (context retrieval) are bookkeeping: counted in ``metadata.skipped_events``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Source, Unreadable, as_list, as_object, digest, records_source, tool_call
from .stream import container

_SKIP = {"recall", "change_agent_state", "agent_state_changed", "null", "condensation", "think"}
_NO_ARGS = {"thought", "impl_source", "security_risk", "confirmation_state", "hidden", "is_input",
            "blocking", "is_static", "cwd", "wait_for_response", "image_urls"}


def is_event(obj: Any) -> bool:
    return isinstance(obj, dict) and "source" in obj and ("action" in obj or "observation" in obj)


def _text(ev: dict[str, Any]) -> str:
    args = ev.get("args") or {}
    return str(args.get("content") or args.get("thought") or ev.get("message") or ev.get("content") or "")


def _events(events: list[Any], field: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    responses: set[str] = set()
    minted: dict[Any, tuple[str, str]] = {}  # action event id -> (call id, name)
    skipped: dict[str, int] = {}
    for i, ev in enumerate(events):
        ev = as_object(ev, f"{field}[{i}]")
        kind = str(ev.get("action") or ev.get("observation"))
        tcm = ev.get("tool_call_metadata")
        if "action" in ev:
            if kind in _SKIP:
                skipped[kind] = skipped.get(kind, 0) + 1
            elif kind == "system":
                msgs.append({"role": "system", "content": _text(ev)})
            elif isinstance(tcm, dict) and isinstance(tcm.get("model_response"), dict):
                resp = tcm["model_response"]
                rid = str(resp.get("id") or digest(resp))
                if rid in responses:
                    continue
                responses.add(rid)
                choice = (resp.get("choices") or [{}])[0]
                m = as_object(choice.get("message"), f"{field}[{i}].tool_call_metadata.model_response"
                                                     ".choices[0].message")
                out = {"role": "assistant", "content": m.get("content")}
                calls = [tool_call(str(c.get("id")), str((c.get("function") or {}).get("name")),
                                   (c.get("function") or {}).get("arguments"))
                         for c in (m.get("tool_calls") or [])]
                if calls:
                    out["tool_calls"] = calls
                msgs.append(out)
            elif kind == "message":
                msgs.append({"role": "user" if ev.get("source") == "user" else "assistant", "content": _text(ev)})
            elif ev.get("source") == "user":
                skipped[kind] = skipped.get(kind, 0) + 1
            else:  # an action without the model's response: a tool call with a minted id
                args = {k: v for k, v in (ev.get("args") or {}).items() if k not in _NO_ARGS}
                call = tool_call(f"oh_{ev.get('id', i)}", str(kind), args)
                minted[ev.get("id")] = (call["id"], str(kind))
                thought = (ev.get("args") or {}).get("thought") or None
                msgs.append({"role": "assistant", "content": thought, "tool_calls": [call]})
        else:
            if isinstance(tcm, dict) and tcm.get("tool_call_id"):
                msgs.append({"role": "tool", "tool_call_id": str(tcm["tool_call_id"]),
                             "name": tcm.get("function_name"), "content": str(ev.get("content") or "")})
            elif ev.get("cause") in minted:
                call_id, name = minted.pop(ev["cause"])
                msgs.append({"role": "tool", "tool_call_id": call_id, "name": name,
                             "content": str(ev.get("content") or "")})
            elif kind == "error":
                msgs.append({"role": "user", "content": str(ev.get("content") or ev.get("message") or "")})
            else:
                skipped[kind] = skipped.get(kind, 0) + 1
    return msgs, ({"skipped_events": skipped} if skipped else {})


def _resolved(rec: dict[str, Any]) -> bool | None:
    for where in (rec, rec.get("test_result") or {}, (rec.get("test_result") or {}).get("report") or {},
                  rec.get("report") or {}):
        if isinstance(where, dict) and isinstance(where.get("resolved"), bool):
            return bool(where["resolved"])
    return None


def convert(doc: Any) -> dict[str, Any]:
    if isinstance(doc, list):
        msgs, meta = _events(doc, "events")
        cid = "openhands-" + digest(msgs)
        return {"id": cid, "messages": msgs, "metadata": meta}
    doc = as_object(doc)
    history = as_list(doc.get("history"), "history")
    if not is_event(history[0]):
        raise Unreadable("history[0]", "expected an OpenHands event (source with action or observation)")
    msgs, meta = _events(history, "history")
    for k in ("instance_id", "test_result", "error", "instance", "metadata"):
        if doc.get(k) is not None:
            meta["run_metadata" if k == "metadata" else k] = doc[k]
    if isinstance(meta.get("run_metadata"), dict):
        llm = meta["run_metadata"].get("llm_config")
        if isinstance(llm, dict):  # the key is masked in the log; never carry even that field
            meta["run_metadata"] = {**meta["run_metadata"],
                                    "llm_config": {k: v for k, v in llm.items() if "key" not in k.lower()}}
    metrics = doc.get("metrics")
    if isinstance(metrics, dict):
        meta["metrics"] = {k: metrics[k] for k in ("accumulated_cost", "accumulated_token_usage") if k in metrics}
    resolved = _resolved(doc)
    if resolved is not None:
        meta["resolved"] = resolved
    cid = doc.get("instance_id") or "openhands-" + digest(msgs)
    return {"id": str(cid), "messages": msgs, "metadata": meta}


def open_openhands(path: Path) -> Source:
    kind = container(path)
    return records_source(path, "document" if kind == "array" else kind, convert)
