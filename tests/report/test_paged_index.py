"""A large run's browser index is paged from disk too (issue 11, item 7g): above ``PAGED_ABOVE``
candidates the page embeds only the index's shared tables, ``report-data/index-K.js`` hold its
columns, every candidate is found through them, and a small run's page is as before."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate
from tgrs_agents.report import html
from tgrs_agents.report.data import load_run, payloads
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
COLS = ("id", "task", "st", "by", "score", "rnd", "reason", "line", "marks")


def unpack(blob: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(blob)))


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def embedded(page: str, name: str) -> str:
    m = re.search(rf'<script type="application/octet-stream" id="data-{name}">([^<]*)</script>', page)
    assert m is not None
    return m.group(1)


def meta(page: str) -> dict[str, Any]:
    return json.loads(re.search(r'<script type="application/json" id="meta">(.*?)</script>', page).group(1))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("paged-index")
    write_synthetic(d / "in.jsonl", 150, seed=7)
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    asyncio.run(curate(d / "in.jsonl", panel, d / "run", options=CurateOptions(cache=False)))
    return d / "run"


@pytest.fixture
def paged(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    monkeypatch.setattr(html, "PAGED_ABOVE", 50)
    monkeypatch.setattr(html, "PAGE_ROWS", 40)
    monkeypatch.setattr(html, "INDEX_ROWS", 32)
    html.write_report(run)
    return run


def index_pages(run: Path, pages: int) -> list[dict[str, Any]]:
    out = []
    for k in range(pages):
        m = re.fullmatch(r'tgrsIndex\((\d+), "([^"]*)"\);\n', (run / "report-data" / f"index-{k}.js").read_text())
        assert m is not None and int(m.group(1)) == k
        out.append(unpack(m.group(2)))
    return out


def test_a_large_run_writes_its_index_in_pages_and_not_in_the_page(paged: Path) -> None:
    page = (paged / "report.html").read_text()
    data = load_run(paged)
    n = data.n
    assert n > 50 and meta(page)["index"] == {"pages": -(-n // 32), "rows": 32, "dir": "report-data"}
    head = unpack(embedded(page, "index"))
    assert not set(COLS) & set(head)  # no per-candidate column is embedded
    assert head["teachers"] == data.teachers and head["tasks"] == data.tasks.values
    assert embedded(page, "details") == ""
    for cid in data.ids()[:5] + data.ids()[-5:]:
        assert f'"{cid}"' not in page  # ids live in the pages only
    assert sorted(p.name for p in (paged / "report-data").glob("index-*.js")) == sorted(
        f"index-{k}.js" for k in range(-(-n // 32)))
    data.close()


def test_every_candidate_is_found_through_the_index_pages(paged: Path) -> None:
    data = load_run(paged)
    full = unpack(payloads(data)[0])  # what a small page would embed
    pages = index_pages(paged, -(-data.n // 32))
    assert all(len(p["id"]) == 32 for p in pages[:-1]) and 0 < len(pages[-1]["id"]) <= 32
    joined = {k: [x for p in pages for x in p[k]] for k in COLS}
    assert joined == {k: full[k] for k in COLS}
    accepted = {r["id"] for r in jsonl(paged / "accepted.jsonl")}
    decided = jsonl(paged / "accepted.jsonl") + jsonl(paged / "rejected.jsonl")
    where = {cid: i for i, cid in enumerate(joined["id"])}
    assert len(where) == data.n == len(decided)
    for rec in decided:  # each one on the page its row says, with its own line and status
        i = where[rec["id"]]
        p = pages[i // 32]
        assert p["id"][i % 32] == rec["id"] and p["line"][i % 32] == rec["line"]
        status = full["status"][p["st"][i % 32]]
        assert status == ("accepted" if rec["id"] in accepted else "rejected")
    data.close()


def test_a_small_run_embeds_its_whole_index_as_before(paged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html, "PAGED_ABOVE", 10_000)
    page = html.write_report(paged).read_text()
    assert not (paged / "report-data").exists()
    assert "index" not in meta(page) and "paged" not in meta(page)
    data = load_run(paged)
    index, details = payloads(data)
    assert unpack(embedded(page, "index")) == unpack(index) and unpack(embedded(page, "details")) == unpack(details)
    assert unpack(index)["id"] == data.ids() and len(data.ids()) == data.n
    data.close()
