"""Shipped files (teacher panels, judge prompts): inside the wheel, or beside the repo checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def asset_path(relative: str) -> Path:
    """``teachers/...`` or ``prompts/...`` from the installed wheel or the source tree."""
    for root in (_PKG / "assets", _PKG.parent):
        p = root / relative
        if p.exists():
            return p
    raise FileNotFoundError(f"shipped file {relative!r} not found under {_PKG}")
