"""A small real curate run to export: generated calculator trajectories plus the hand-made traces of
export_data.py, judged by the shipped verifier panel."""

from __future__ import annotations

import asyncio
import json

import pytest
from export_data import HANDMADE, ROOT, Curated

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate
from tgrs_agents.tasks.arithmetic_data import write_synthetic
from tgrs_agents.types import Candidate


@pytest.fixture(scope="session")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Curated:
    d = tmp_path_factory.mktemp("curated")
    data = write_synthetic(d / "in.jsonl", 24, seed=3)
    with data.open("a") as f:
        for rec in HANDMADE:
            f.write(json.dumps(rec) + "\n")
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    asyncio.run(curate(data, panel, d / "run", options=CurateOptions(cache=False)))
    # curate's input gate now sets aside "noids" and "orphans" (tool results without an id, or answering
    # no call); runs curated before the gate accepted such traces, and the export still repairs them:
    # add them to accepted.jsonl as such a run wrote them.
    aside = {r["id"]: r for r in map(json.loads, (d / "run" / "invalid.jsonl").read_text().splitlines())}
    assert {k: r["field"] for k, r in aside.items()} == {"noids": "messages[2].tool_call_id",
                                                         "orphans": "messages[2].tool_call_id"}
    like = json.loads((d / "run" / "accepted.jsonl").read_text().splitlines()[0])
    with (d / "run" / "accepted.jsonl").open("a") as f:
        for rec in HANDMADE:
            if rec["id"] in aside:
                row = {**like, **Candidate.model_validate(rec).sft_record(), "line": aside[rec["id"]]["line"]}
                f.write(json.dumps(row) + "\n")
    accepted = {r["id"]: r for r in map(json.loads, (d / "run" / "accepted.jsonl").read_text().splitlines())}
    missing = {r["id"] for r in HANDMADE} - set(accepted)
    assert not missing, f"the panel rejected hand-made traces {missing}: the fixture is wrong"
    return Curated(d / "run", data, accepted)
