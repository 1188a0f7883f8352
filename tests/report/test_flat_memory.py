"""The report keeps no per-candidate column in memory (issue 11, item 7g): records on disk, sorted to
input order there, statistics a chunk at a time, many task ids interned through SQLite -- and says
exactly what the in-memory computation said."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate
from tgrs_agents.report import html, intern, plots, stats
from tgrs_agents.report.agreement import teacher_table
from tgrs_agents.report.columns import DECIDED, Column, RecordFile
from tgrs_agents.report.data import load_run
from tgrs_agents.report.intern import Interner
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("flat")
    write_synthetic(d / "in.jsonl", 150, seed=7)
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    asyncio.run(curate(d / "in.jsonl", panel, d / "run", options=CurateOptions(cache=False)))
    return d / "run"


def test_records_are_appended_updated_and_sorted_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tgrs_agents.report import columns

    monkeypatch.setattr(columns, "CHUNK", 16)  # several flushes, several sorted chunks
    dt = np.dtype([("a", "<i8"), ("b", "i1")])
    f = RecordFile(tmp_path, dt)
    f.buf = np.zeros(16, dt)
    for i in range(100):
        assert f.append((i * 10, i % 3)) == i
    f.set(5, b=9)  # on disk
    f.set(99, a=-1)  # still buffered
    assert f.rows(4, 7)["b"].tolist() == [1, 9, 0] and f.rows(98, 200)["a"].tolist() == [980, -1]
    order = np.random.default_rng(0).permutation(100)
    extra = np.arange(100) * 2
    s = RecordFile.sorted(f, order, {"x": ("<i4", extra.__getitem__)})
    got = s.rows(0, 100)
    want_a = np.array([i * 10 for i in range(100)])
    want_a[99] = -1
    assert got["a"].tolist() == want_a[order].tolist() and got["x"].tolist() == extra[order].tolist()
    col = Column(s, "a")
    assert len(col) == 100 and col[3] == want_a[order][3] and col[-1] == want_a[order][-1]
    assert col[10:20].tolist() == want_a[order][10:20].tolist() and col[10:20].flags.c_contiguous
    assert np.asarray(col).tolist() == want_a[order].tolist() and list(col)[:2] == want_a[order][:2].tolist()
    with pytest.raises(IndexError):
        col[100]
    f.close()
    s.close()
    assert not list(tmp_path.iterdir())  # unnamed scratch files: nothing left behind


def test_many_values_are_interned_through_sqlite_in_first_seen_order(tmp_path: Path) -> None:
    small, big = Interner(), Interner(tmp_path, in_memory=5)
    words = [f"task-{i % 37}" for i in range(0, 400, 3)] + ["é\u2028\"q\"", ""]
    assert [big(w) for w in words] == [small(w) for w in words]
    assert big.db is not None and small.db is None and len(big) == len(small) == len(set(words))
    assert big.values == small.values == list(dict.fromkeys(words))
    assert orjson.dumps(big.json()) == orjson.dumps(small.json()) == orjson.dumps(small.values)
    big.close()
    assert not list(tmp_path.iterdir())


def _page(path: Path) -> str:
    """The page less what names its folder and when it was written."""
    return re.sub(r"generated [0-9-]+ [0-9:]+", "", path.read_text().replace(str(path.parent.parent), "DIR"))


def test_a_report_through_sqlite_and_small_chunks_is_the_same_report(run_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(run_dir, a)
    shutil.copytree(run_dir, b)
    monkeypatch.setattr(html, "PAGED_ABOVE", 50)
    monkeypatch.setattr(html, "PAGE_ROWS", 40)
    html.write_report(a)
    monkeypatch.setattr(intern, "IN_MEMORY", 3)  # task ids (and the rest) through SQLite
    monkeypatch.setattr(plots, "CHUNK", 7)  # the decision curve a few decisions at a time
    monkeypatch.setattr(stats.Scan.__init__, "__defaults__", (11,))  # statistics 11 candidates at a time
    html.write_report(b)
    assert _page(a / "report.html") == _page(b / "report.html")
    files = sorted(p.name for p in (a / "report-data").iterdir())
    assert files == sorted(p.name for p in (b / "report-data").iterdir()) and len(files) > 3
    for name in files:
        assert (a / "report-data" / name).read_bytes() == (b / "report-data" / name).read_bytes()
    assert not [p for p in b.iterdir() if p.name.startswith(".tgrs-report-")]


@pytest.mark.parametrize("chunk", [5, 1 << 15])
def test_streamed_statistics_equal_the_whole_array_ones(run_dir: Path, tmp_path: Path, chunk: int) -> None:
    top = tmp_path / "loop"
    for r in (1, 2):
        shutil.copytree(run_dir, top / f"round-{r}" / "curate")
    (top / "summary.json").write_text(json.dumps({"rounds": [{"round": 0}, {"round": 1}, {"round": 2}]}))
    data = load_run(top)
    labels, panel, independent = data.labels(), data.panel(), data.independent()
    rnd, st, by = np.asarray(data.cols["rnd"]), np.asarray(data.cols["st"]), np.asarray(data.cols["by"])
    scan = stats.Scan(data, [None, 1, 2], chunk=chunk)
    names = data.names.values
    for r in (None, 1, 2):
        mask = np.ones(data.n, bool) if r is None else rnd == r
        rej = np.flatnonzero(mask & (st == 1))
        want = teacher_table(data.teachers, labels[:, mask], panel[mask],
                             [names[by[j]] if by[j] >= 0 else None for j in rej], {}, [],
                             independent=independent[mask])
        assert scan.scopes[r].table(data.teachers, {}, []) == want
    assert want["candidates"] == int(mask.sum()) > 0 and want["rejections"] > 0
    score = np.asarray(data.cols["score"], dtype=float)
    bins = np.linspace(min(0.0, score.min()), max(1.0, score.max()), 21)
    assert np.array_equal(scan.bins, bins)
    assert scan.acc.tolist() == np.histogram(score[(st == 0) | (st == 2)], bins=bins)[0].tolist()
    assert scan.rej.tolist() == np.histogram(score[st == 1], bins=bins)[0].tolist()
    assert scan.per_set.tolist() == np.bincount(np.asarray(data.cols["saved"]), minlength=len(data.saved_sets)).tolist()
    data.close()


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_decision_curve_streams_decisions_in_time_order_and_sorts_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shuffle: bool) -> None:
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 50, 300).astype(float))  # ties: accepted before rejected, as numpy sorts them
    s = rng.integers(0, 2, 300).astype(np.int8)
    order = np.lexsort((s, t))
    t, s = t[order], s[order]
    if shuffle:
        p = rng.permutation(300)
        t, s = t[p], s[p]
    f = RecordFile(tmp_path, DECIDED)
    for x, y in zip(t.tolist(), s.tolist(), strict=True):
        f.append((x, y))
    monkeypatch.setattr(plots, "CHUNK", 17)
    got_t, got = plots._decision_curve(f)
    want_t, want = plots._decision_curve_sorted(f, np.unique(np.linspace(0, 299, 300).astype(np.int64)))
    assert got_t.tolist() == want_t.tolist() and [c.tolist() for c in got] == [c.tolist() for c in want]
    assert got[0][-1] + got[1][-1] == 300
    f.close()
