"""Compatibility alias: panel files written for 0.1 name ``tgrs_agents.checks:answer_matches_tool``.

The checks live in :mod:`tgrs_agents.teachers.checks`."""

from .teachers.checks import answer_matches_tool

__all__ = ["answer_matches_tool"]
