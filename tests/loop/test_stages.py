"""Stage records: done markers written once and read back, and summary.json's keys (the report reads them)."""

from __future__ import annotations

import json

from tgrs_agents.loop.stages import (
    BaseCheckpoint,
    Evaluated,
    Generated,
    Judged,
    Pooled,
    Refined,
    Round,
    Trained,
    WarmStart,
    run_stage,
)

EV = Evaluated(pass1=0.1, passk=0.4, k=8, eval_tasks=32, eval_tokens_per_s=900.0, wall_s=2.0)
GEN = Generated(samples=64, gen_tokens=4000, gen_tokens_per_s=1000.0, wall_s=4.0)
JUDGED = Judged(accepted=16, acceptance_rate=0.25, calls_saved=40, accepted_file="curate/accepted.jsonl", wall_s=1.0)
POOLED = Pooled(pooled=12, new_accepted=16, set_aside_by_filters=4, wall_s=0.5)
TRAINED = Trained(sft_tokens_per_s=5000.0, sft_backend="torch", sft_rows=12, sft_train_s=3.0, final_loss=0.7,
                  wall_s=3.5)


def test_run_stage_writes_the_marker_once_and_reads_it_back(tmp_path):
    calls, logs = [], []
    marker = tmp_path / "round-1" / "generate.done.json"

    def fn() -> Generated:
        calls.append(1)
        return Generated(samples=2, gen_tokens=10, gen_tokens_per_s=1234.5)

    first = run_stage(marker, Generated, fn, label="round 1: generate", live=False, log=logs.append)
    again = run_stage(marker, Generated, fn, label="round 1: generate", live=False, log=logs.append)
    assert calls == [1] and again == first and first.wall_s >= 0
    assert json.loads(marker.read_text()) == {"samples": 2, "gen_tokens": 10, "gen_tokens_per_s": 1234.5,
                                              "wall_s": first.wall_s}
    assert len(logs) == 1 and logs[0].startswith("[tgrs] round 1: generate done in ")
    assert logs[0].endswith(", 1,234 gen tokens/s")


def test_markers_written_before_the_records_still_resume():
    # the dict-shaped markers of earlier versions, byte for byte
    assert Judged.from_json({"accepted": 64, "acceptance_rate": 1.0, "accepted_file": "accepted.jsonl",
                             "wall_s": 0.1}) == Judged(accepted=64, acceptance_rate=1.0,
                                                       accepted_file="accepted.jsonl", wall_s=0.1)
    r = Refined.from_json({"refine_original": 2, "refine_refined": 3, "refine_dropped": 1,
                           "accepted_file": "refine/refined.jsonl", "wall_s": 9.0})
    assert r.counts == {"original": 2, "refined": 3, "dropped": 1} and r.to_json()["refine_refined"] == 3
    assert BaseCheckpoint.from_json({"base_model": "m", "wall_s": 0.0}).base_model == "m"
    for rec in (EV, GEN, JUDGED, POOLED, TRAINED, r):
        assert type(rec).from_json(json.loads(json.dumps(rec.to_json()))) == rec
    assert "calls_saved" not in Judged(accepted=1, acceptance_rate=1.0, accepted_file="a").to_json()


def test_round_zero_entry():
    ws = WarmStart(seed_examples=300, sft_tokens_per_s=1e4, sft_backend="torch", sft_train_s=5.0, final_loss=1.2,
                   wall_s=6.0)
    assert Round(0, EV, start=ws).to_json() == {
        "round": 0, "pass@1": 0.1, "pass@8": 0.4, "eval_tasks": 32, "eval_tokens_per_s": 900.0, "wall_s": 2.0,
        "warm_start": {"seed_examples": 300, "sft_tokens_per_s": 1e4, "sft_backend": "torch", "sft_train_s": 5.0,
                       "final_loss": 1.2, "wall_s": 6.0}}


def test_round_k_entry_keeps_the_summary_keys():
    entry = Round(1, EV, generated=GEN, judged=JUDGED, pooled=POOLED, trained=TRAINED).to_json()
    assert list(entry) == [
        "round", "pass@1", "pass@8", "eval_tasks", "eval_tokens_per_s", "wall_s", "samples", "gen_tokens",
        "gen_tokens_per_s", "accepted", "acceptance_rate", "calls_saved", "pooled", "new_accepted",
        "set_aside_by_filters", "sft_tokens_per_s", "sft_backend", "sft_rows", "sft_train_s", "sft_final_loss",
        "sft_wall_s", "stage_wall_s"]
    assert entry["sft_final_loss"] == 0.7 and entry["sft_wall_s"] == 3.5
    assert entry["wall_s"] == 2.0 + 4.0 + 1.0 + 0.5 + 3.5  # the whole round
    assert entry["stage_wall_s"] == {"generate": 4.0, "judge": 1.0, "sft": 3.5, "eval": 2.0}


def test_round_k_entry_with_refine_keeps_the_judge_s_own_time():
    refined = Refined(counts={"original": 10, "refined": 5, "dropped": 1}, accepted_file="refine/refined.jsonl",
                      wall_s=7.0)
    entry = Round(1, EV, generated=GEN, judged=JUDGED, refined=refined, pooled=POOLED, trained=TRAINED).to_json()
    assert entry["refine_refined"] == 5 and "accepted_file" not in entry
    assert entry["stage_wall_s"] == {"generate": 4.0, "judge": 1.0, "refine": 7.0, "sft": 3.5, "eval": 2.0}
