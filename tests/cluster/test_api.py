"""``await curate(..., engine="ray")``: the Python API dispatches to the cluster engine."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from tgrs_agents import CurateOptions, curate
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.errors import ConfigError
from tgrs_agents.events import EventBus
from tgrs_agents.tasks.arithmetic_data import write_synthetic

VERIFIERS = Path(__file__).resolve().parents[2] / "teachers" / "panel-verifiers.toml"
COUNTS = ("input_lines", "valid", "accepted", "rejected", "invalid", "failed", "passed", "pending")


def test_engine_ray_in_the_python_api_equals_local(ray_local, tmp_path):
    data = write_synthetic(tmp_path / "in.jsonl", 200, seed=7, bad_every=23)
    opts = CurateOptions(cache=False)
    local = asyncio.run(curate(data, load_panel(VERIFIERS), tmp_path / "local", options=opts))

    async def both() -> tuple[dict, int]:  # the event loop stays free while the shards run
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        t = asyncio.create_task(tick())
        t0 = time.perf_counter()
        s = await curate(data, load_panel(VERIFIERS), tmp_path / "ray", options=opts, engine="ray", workers=2)
        elapsed = time.perf_counter() - t0
        t.cancel()
        return s, ticks, elapsed

    s, ticks, elapsed = asyncio.run(both())
    assert s["engine"]["name"] == "ray" and s["engine"]["shards"] == 2
    assert {k: s[k] for k in COUNTS} == {k: local[k] for k in COUNTS} and local["invalid"] > 0
    ids = {json.loads(x)["id"] for x in (tmp_path / "ray" / "accepted.jsonl").read_text().splitlines()}
    assert ids == {json.loads(x)["id"] for x in (tmp_path / "local" / "accepted.jsonl").read_text().splitlines()}
    assert ticks >= 0.5 * elapsed / 0.05 - 1  # the loop ticked on through the run (a blocked one: 0-1)


@pytest.mark.parametrize(("kw", "field"), [({"engine": "spark"}, "engine"), ({"workers": 0}, "workers"),
                                           ({"bus": EventBus()}, "bus")])
def test_bad_engine_arguments_are_one_line(tmp_path, kw, field):
    data = write_synthetic(tmp_path / "in.jsonl", 4)
    kw = {"engine": "ray", **kw}
    with pytest.raises(ConfigError) as e:
        asyncio.run(curate(data, load_panel(VERIFIERS), tmp_path / "o", **kw))
    assert e.value.field == field and "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()


def test_without_ray_the_api_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    data = write_synthetic(tmp_path / "in.jsonl", 4)
    with pytest.raises(ConfigError, match=r"pip install 'tgrs-agents\[ray\]'"):
        asyncio.run(curate(data, load_panel(VERIFIERS), tmp_path / "o", engine="ray"))
