"""``tgrs curate --engine ray`` on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tgrs_agents.cli import main
from tgrs_agents.tasks.arithmetic_data import synthetic_lines

VERIFIERS = Path(__file__).resolve().parents[2] / "teachers" / "panel-verifiers.toml"


def _data(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(line + "\n" for line in synthetic_lines(n, seed=1)))
    return path


def test_without_ray_one_line_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc = main(["curate", str(_data(tmp_path, 8)), "--panel", str(VERIFIERS), "--out", str(tmp_path / "o"),
               "--engine", "ray", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "pip install 'tgrs-agents[ray]'" in err
    assert not (tmp_path / "o").exists()


def test_engine_ray_on_the_command_line(ray_local, tmp_path, capsys):
    rc = main(["curate", str(_data(tmp_path, 120)), "--panel", str(VERIFIERS), "--out", str(tmp_path / "o"),
               "--engine", "ray", "--workers", "2", "--no-cache", "--quiet", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["engine"]["shards"] == 2 and s["valid"] == 120 and s["accepted"] > 0
    assert len((tmp_path / "o" / "accepted.jsonl").read_text().splitlines()) == s["accepted"]


def test_a_shards_own_error_is_said_in_one_line(ray_local, tmp_path, monkeypatch, capsys):
    panel = tmp_path / "panel.toml"
    panel.write_text('policy = "unanimous"\n[[teacher]]\nname = "judge"\nkind = "openai"\nmodel = "gpt-4o-mini"\n'
                     'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "TGRS_CLUSTER_UNSET_KEY"\n')
    monkeypatch.delenv("TGRS_CLUSTER_UNSET_KEY", raising=False)
    rc = main(["curate", str(_data(tmp_path, 8)), "--panel", str(panel), "--out", str(tmp_path / "o"),
               "--engine", "ray", "--workers", "2", "--no-cache", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "TGRS_CLUSTER_UNSET_KEY is not set" in err and "Traceback" not in err
