"""Between stored trajectories and chat templates.

Trajectories are stored in OpenAI format, where a tool call's ``arguments`` is a JSON *string*.
Chat templates (Qwen, Llama, the tiny student's) expect a mapping. :func:`template_messages` makes
the copy a template wants; nothing is changed in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def template_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if v is not None}
        if m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                fn = dict(tc.get("function", {}))
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        parsed = json.loads(args) if args.strip() else {}
                    except ValueError:
                        parsed = {"input": args}
                    fn["arguments"] = parsed if isinstance(parsed, dict) else {"input": parsed}
                calls.append({**tc, "function": fn})
            m["tool_calls"] = calls
            m.setdefault("content", "")
        out.append(m)
    return out
