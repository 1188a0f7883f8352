"""``tgrs export``: a run's kept trajectories, cleaned (:mod:`.hygiene`), in a trainer's format (:mod:`.writers`).

One streamed pass over the kept records: read and validate -> hygiene -> convert -> write. A record
that does not validate or that the format cannot express is *set aside* (its file, line and reason
are listed); a record a hygiene rule removes is *dropped* (its rule is listed). Neither stops the
export. The counts are printed and written to ``PATH.export.json`` beside the output, so what went
into a training set can be told afterwards. Nothing here calls an API or judges again.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..curation.ingest import Invalid
from ..curation.store import atomic_write
from ..errors import ConfigError
from ..types import Candidate
from .hygiene import (
    Dropped,
    Hygiene,
    TokenCounter,
    estimate_tokens,
    has_answer,
    pair_tool_calls,
    redact,
    tokenizer_counter,
    trim_trailing_user,
)
from .source import errored, errored_ids, read, resolve
from .writers import CONVERTERS, FORMATS, Trace, Unconvertible, Writer

if TYPE_CHECKING:
    from .pairs import PairSettings

LISTED = 1000  # set-aside, dropped and redaction entries listed in the sidecar (all are counted)


@dataclass
class ExportReport:
    """What an export read, wrote, set aside, dropped and changed (``to_json`` is the sidecar)."""

    source: str
    kind: str
    round: int | None
    format: str
    out: str
    hygiene: Hygiene
    tokens: str
    counts: Counter[str] = field(default_factory=Counter)
    redacted: Counter[str] = field(default_factory=Counter)
    redaction_sites: list[dict[str, Any]] = field(default_factory=list)
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sidecar(self) -> Path:
        return Path(self.out + ".export.json")

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "source_kind": self.kind, "round": self.round, "format": self.format,
                "out": self.out, "hygiene": asdict(self.hygiene), "token_count": self.tokens,
                "counts": dict(sorted(self.counts.items())),
                "redacted": {"total": sum(self.redacted.values()), "by_kind": dict(sorted(self.redacted.items())),
                             "where": self.redaction_sites},
                "set_aside": self.set_aside, "dropped": self.dropped}

    def lines(self) -> list[str]:
        """The summary ``tgrs export`` prints."""
        c = self.counts
        rules = {k.removeprefix("dropped_"): v for k, v in sorted(c.items()) if k.startswith("dropped_")}
        fixes = [f"{k.replace('_', ' ')} {c[k]}" for k in (
            "trailing_turns_trimmed", "call_ids_minted", "result_ids_filled", "orphan_calls_removed",
            "orphan_results_removed", "user_turns_joined", "text_beside_calls_dropped", "developer_as_system",
            "message_keys_dropped") if c[k]]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.redacted.items()))
        out = [f"tgrs export: {self.source} -> {self.out} ({self.format})",
               f"  read {c['read']}, written {c['written']}, set aside {c['set_aside']}, dropped "
               f"{sum(rules.values())}" + (f" ({', '.join(f'{k} {v}' for k, v in rules.items())})" if rules else ""),
               f"  changed: {', '.join(fixes) if fixes else 'nothing'}",
               f"  secrets redacted: {sum(self.redacted.values())}" + (f" ({kinds})" if kinds else ""),
               f"  token lengths: {self.tokens}"]
        out += [f"  set aside: {s['reason']}" for s in self.set_aside[:5]]
        out.append(f"  report: {self.sidecar}")
        return out


def export_run(source: str | Path, *, to: str, out: str | Path, round: int | None = None,
               hygiene: Hygiene = Hygiene(), force: bool = False, name: str = "tgrs",
               pairs: PairSettings | None = None) -> ExportReport:
    """Export the kept trajectories of ``source`` (a curate run dir, a ``tgrs run`` dir or a JSONL file)
    to ``out`` in format ``to`` (one of :data:`~.writers.FORMATS`), applying ``hygiene``.

    ``round``: which round of a ``tgrs run`` directory (default: the last with a pool; for ``dpo``
    the last judged). ``force``: replace a non-empty output directory. ``name``: the dataset's name
    in ``dataset_info.json`` (``llamafactory``). ``pairs``: how ``dpo`` pairs are chosen
    (:class:`~.pairs.PairSettings`; ``dpo`` reads accepted and rejected candidates, see :mod:`.pairs`)."""
    if to not in FORMATS:
        raise ConfigError(f"unknown format {to!r}; expected one of {', '.join(FORMATS)}", field="to")
    check_hygiene(hygiene)
    if to == "dpo":  # pairs read the rejected candidates too: their own module
        from .pairs import PairSettings, export_pairs

        return export_pairs(source, out=out, settings=pairs or PairSettings(), round=round, hygiene=hygiene)
    src = resolve(source, round)
    out = Path(out)
    count: TokenCounter = tokenizer_counter(hygiene.tokenizer) if hygiene.tokenizer else estimate_tokens
    report = ExportReport(str(src.path), src.kind, src.round, to, str(out), hygiene,
                          f"tokenizer {hygiene.tokenizer}" if hygiene.tokenizer else "estimate: ceil(chars / 4)")
    failed = errored_ids(src.origins) if hygiene.drop_errored else set()
    convert = CONVERTERS[to]
    writer = Writer(to, out, force=force, name=name)
    try:
        for line, rec in read(src.path):
            report.counts["read"] += 1
            where = f"{src.path}:{line}"
            if isinstance(rec, Invalid):
                _set_aside(report, where, line, rec.id, rec.reason)
                continue
            counts: Counter[str] = Counter()
            sites: list[tuple[str, str]] = []
            try:
                row = convert(clean(rec, line, hygiene, failed, count, counts, sites), counts)
            except Dropped as d:
                report.counts[f"dropped_{d.rule}"] += 1
                if len(report.dropped) < LISTED:
                    report.dropped.append({"file": str(src.path), "line": line, "id": rec.id, "rule": d.rule,
                                           "detail": str(d)})
                continue
            except Unconvertible as u:
                _set_aside(report, where, line, rec.id, f"{where}: {to}: {u}")
                continue
            writer.write(row)
            report.counts["written"] += 1
            report.counts.update(counts)
            for path, kind in sites:
                report.redacted[kind] += 1
                if len(report.redaction_sites) < LISTED:
                    report.redaction_sites.append({"id": rec.id, "line": line, "path": path, "kind": kind})
    except BaseException:
        writer.abort()
        raise
    writer.close()
    atomic_write(report.sidecar, json.dumps(report.to_json(), indent=1) + "\n")
    return report


def check_hygiene(hygiene: Hygiene) -> None:
    """A :class:`ConfigError` naming the field for a hygiene option out of range."""
    if hygiene.tool_ids not in ("repair", "drop", "off"):
        raise ConfigError(f"expected 'repair', 'drop' or 'off'; got {hygiene.tool_ids!r}", field="tool_ids")
    if hygiene.max_tokens is not None and hygiene.max_tokens < 1:
        raise ConfigError(f"expected a positive number; got {hygiene.max_tokens}", field="max_tokens")


def _set_aside(report: ExportReport, where: str, line: int, cid: str | None, reason: str) -> None:
    report.counts["set_aside"] += 1
    if len(report.set_aside) < LISTED:
        report.set_aside.append({"file": where.rsplit(":", 1)[0], "line": line, "id": cid, "reason": reason})


def clean(cand: Candidate, line: int, hy: Hygiene, failed: set[str], count: TokenCounter,
          counts: Counter[str], sites: list[tuple[str, str]]) -> Trace:
    """One candidate through the hygiene rules, in order; raises :class:`Dropped` with the rule."""
    if hy.drop_errored and (cand.id in failed or errored({"metadata": cand.metadata})):
        raise Dropped("errored", "its generation ended in an error")
    messages = [m.model_dump(mode="json", exclude_none=True) for m in cand.messages]
    tools = cand.tools
    if hy.redact:
        messages = redact(messages, "messages", sites)
        tools = redact(tools, "tools", sites)
    if hy.trim_trailing_user:
        messages, n = trim_trailing_user(messages)
        counts["trailing_turns_trimmed"] += n
    messages = pair_tool_calls(cand.id, messages, hy.tool_ids, counts)
    if not messages or (hy.require_answer and not has_answer(messages)):
        raise Dropped("no_answer", "it does not end on an assistant answer (text, no tool call)")
    if hy.max_tokens is not None and (n := count(messages, tools)) > hy.max_tokens:
        raise Dropped("too_long", f"{n} tokens > {hy.max_tokens}")
    return Trace(cand.id, cand.task_id, line, messages, tools)
