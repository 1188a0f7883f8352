"""The driver SIGKILLed mid-run and started again: the whole run resumes, its outputs equal a single
process's, and no verdict is paid twice beyond the calls in flight at the kill (the stand-in counts)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tgrs_agents.cluster.engine import curate_on_ray
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.tasks.arithmetic_data import write_synthetic

KEY_ENV, KEY = "TGRS_CLUSTER_TEST_KEY", "sk-test-cluster-not-a-real-key"
N, IN_FLIGHT, SHARDS = 300, 16, 2
COUNTS = ("input_lines", "valid", "accepted", "rejected", "invalid", "failed", "passed", "pending")

DRIVER = """
import sys
from tgrs_agents.cluster.engine import curate_on_ray
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions
address, data, panel, out, in_flight, shards = sys.argv[1:]
curate_on_ray(data, load_panel(panel), out, options=CurateOptions(cache=False, max_in_flight=int(in_flight)),
              workers=int(shards), address=address)
"""


def calls(standin: str) -> int:
    return json.load(urllib.request.urlopen(f"{standin}/stats", timeout=10)).get("requests", 0)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rows(path: Path) -> list[str]:
    return sorted(json.dumps(json.loads(x), sort_keys=True) for x in path.read_text().splitlines() if x.strip())


def test_the_driver_killed_mid_run_resumes_the_whole_run(ray_local, standin, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    panel = tmp_path / "panel.toml"
    panel.write_text("\n".join(['policy = "unanimous"', "[[teacher]]", 'name = "judge"', 'kind = "openai"',
                                'model = "gpt-4o-mini"', f'base_url = "{standin}/v1"', f'api_key_env = "{KEY_ENV}"',
                                "max_tokens = 64", "rpm = 2400"]) + "\n")
    data = write_synthetic(tmp_path / "in.jsonl", N, seed=6, per_task=1, bad_every=41)
    one = tmp_path / "single"
    s1 = asyncio.run(CurateRun(data, load_panel(panel), one, options=CurateOptions(cache=False)).run())

    run = tmp_path / "run"
    address = ray_local.get_runtime_context().gcs_address  # the driver joins the tests' cluster
    before = calls(standin)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, address, str(data), str(panel), str(run),
                               str(IN_FLIGHT), str(SHARDS)], env={**os.environ, KEY_ENV: KEY})
    verdicts = [run / "shards" / f"{i:03d}" / "run" / "verdicts.jsonl" for i in range(SHARDS)]
    deadline, journaled = time.monotonic() + 120, 0
    while time.monotonic() < deadline and driver.poll() is None:
        journaled = sum(len(v.read_bytes().splitlines()) for v in verdicts if v.exists())
        if journaled >= 60:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the driver ended before it was killed: the test proves nothing"
    assert 60 <= journaled < N - 60, journaled  # killed mid-run
    driver.send_signal(signal.SIGKILL)
    driver.wait(10)
    # Ray ends the dead driver's tasks (their workers); the shards' locks name the last holders
    holders = [int(p.read_text().split()[0]) for p in run.glob("shards/*/run/.lock") if p.read_text().strip()]
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in holders) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in holders), "the dead driver's workers still hold their shards"
    paid_before = calls(standin) - before
    assert paid_before >= journaled

    s = curate_on_ray(data, load_panel(panel), run, options=CurateOptions(cache=False, max_in_flight=IN_FLIGHT),
                      workers=SHARDS)
    paid = calls(standin) - before
    assert {k: s[k] for k in COUNTS} == {k: s1[k] for k in COUNTS}
    assert s1["accepted"] > 50 and s1["rejected"] > 20 and s1["invalid"] > 3  # not vacuous
    for name in ("accepted", "rejected", "invalid"):
        assert rows(run / f"{name}.jsonl") == rows(one / f"{name}.jsonl"), name  # none lost, none twice
    valid = s1["valid"]
    assert s["teachers"]["judge"]["calls"] == valid  # each verdict counted once, across both drivers
    assert valid <= paid <= valid + SHARDS * IN_FLIGHT, (paid, valid)  # repaid: only what was in flight
    assert paid - paid_before < valid - 40  # the restart resumed; it did not start over
    left = [a["name"] for a in ray_local.util.list_named_actors(all_namespaces=True)
            if json.loads((run / "cluster.json").read_text())["run_id"] in a["name"]]
    assert left == []  # the dead driver's detached actors were found again and ended by the restart
