"""Readers for the trajectory files agent frameworks write, each to canonical OpenAI-format candidates.

One module per source (``openai``, ``anthropic``, ``sharegpt``, ...); each gives a :class:`Format`
whose ``open(path)`` walks the file and converts one record at a time (see :mod:`.base`).
:func:`resolve` picks a reader by name, or with ``auto`` sniffs the file (:mod:`.detect`) and says
why; a directory of trajectory files is one input (:mod:`.dirs`). :func:`check_openai`
(:mod:`.validate`) holds the OpenAI rules the ingest gate applies to every reader's output. The
layer sits below ``curate``: it knows files and records, not runs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .anthropic import open_anthropic, open_claude_code
from .base import Format, Source, Unreadable, check_readable
from .detect import sniff
from .dirs import dir_fingerprint, files_for, sniff_dir
from .dolci import open_dolci
from .inspect_ai import open_inspect
from .llamafactory import open_llamafactory
from .openai import open_openai, open_openai_ft
from .openhands import open_openhands
from .sharegpt import open_sharegpt
from .swe_agent import open_mini, open_swe_agent
from .tau_bench import open_tau_bench
from .validate import check_openai

__all__ = ["FORMATS", "Format", "Source", "Unreadable", "check_openai", "check_readable", "dir_fingerprint",
           "format_names", "input_files", "resolve", "sniff"]

FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("openai", "OpenAI chat messages with an 'id' (JSONL; also a JSON array)", open_openai,
           require_assistant=False),
    Format("openai-ft", "OpenAI fine-tuning chat JSONL (messages, tools; no id)", open_openai_ft),
    Format("anthropic", "Anthropic Messages records (system on top, tool_use / tool_result blocks)", open_anthropic),
    Format("claude-code", "Claude Code session transcripts (JSONL events; one candidate per session)",
           open_claude_code, suffixes=(".jsonl",)),
    Format("sharegpt", "ShareGPT conversations (from/value; function_call / observation; Hermes <tool_call>)",
           open_sharegpt),
    Format("llamafactory", "LLaMA-Factory v1 messages (typed content parts with 'value')", open_llamafactory),
    Format("dolci", "Ai2 Dolci tool-use rows (role environment; Python-call function_calls)", open_dolci),
    Format("inspect", "Inspect AI eval logs, .json or .eval (one candidate per sample and epoch)", open_inspect,
           suffixes=(".eval", ".json")),
    Format("swe-agent", "SWE-agent .traj (one file, one candidate)", open_swe_agent, suffixes=(".traj",)),
    Format("mini-swe-agent", "mini-swe-agent trajectories (message array or {messages, info})", open_mini,
           suffixes=(".traj.json",)),
    Format("openhands", "OpenHands events (a trajectory's event list, or evaluation output.jsonl)", open_openhands),
    Format("tau-bench", "tau-bench results (traj + reward per task and trial)", open_tau_bench),
)}


def format_names() -> list[str]:
    """Every reader's name, and ``auto``."""
    return ["auto", *FORMATS]


def resolve(path: str | Path, name: str = "auto") -> tuple[Format, str]:
    """The reader for ``path``: the one named, or the one :func:`sniff` picks; and why.

    ``path`` may be a directory of trajectory files (:mod:`.dirs`): then the reader must find files
    of its own there, or a :class:`ConfigError` says which it looked for.
    """
    path = Path(path)
    if name != "auto" and name not in FORMATS:
        raise ConfigError(f"unknown input format {name!r}; expected one of {', '.join(format_names())}",
                          field="input_format")
    if path.is_dir():
        chosen, why = sniff_dir(path) if name == "auto" else (name, "as asked")
        fmt = FORMATS[chosen]
        n = len(files_for(path, fmt.name, fmt.suffixes))
        return fmt, f"{'auto: ' if name == 'auto' else ''}{why}; reading its {n} {fmt.name} file{'s' * (n != 1)}"
    if name == "auto":
        chosen, why = sniff(path)
        return FORMATS[chosen], f"auto: {why}"
    return FORMATS[name], "as asked"


def input_files(path: str | Path, fmt: Format) -> list[Path]:
    """The files an input is: the file itself, or a directory's files of ``fmt`` in sorted order."""
    path = Path(path)
    return files_for(path, fmt.name, fmt.suffixes) if path.is_dir() else [path]
