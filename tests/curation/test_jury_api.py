"""The jury through the real SDKs against the loopback stand-in: repeats with distinct seeds (and ledger
keys), the deterministic decoding defaults, reserves for a judge that is down, ``tgrs calibrate`` on a
labelled file and a run with the weights it froze, the self-judging refusal and the tie warning on the
command line, and the jury section of summary.json."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from api_judge_kit import FAST, OA_ENV, build, cand, run, set_keys, table

from tgrs_agents.cli import main as cli_main
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.services import Services
from tgrs_agents.tasks.arithmetic_data import write_synthetic
from tgrs_agents.testing.standin import FaultPlan, StandIn, default_brain

pytest.importorskip("openai")
pytest.importorskip("anthropic")

FLIP = {"sharp": 0.04, "fair": 0.2, "wild": 0.35}  # each judge's chance of getting a candidate wrong


@pytest.fixture(autouse=True)
def env(monkeypatch):
    set_keys(monkeypatch)


def flip_brain(prompt: str) -> dict[str, Any]:
    """The default brain, wrong with the judge's flip rate (the judge is named in the rubric);
    the flip is seeded by the candidate and the judge, so every call of a repeat sees the same."""
    right = default_brain(prompt)
    who = re.findall(r"<rubric>\s*judge (\w+)", prompt)
    if not who:
        return right
    seed = int(hashlib.sha256((who[0] + prompt.split("<final>")[-1]).encode()).hexdigest()[:8], 16)
    if random.Random(seed).random() < FLIP[who[0]]:
        return {"score": 10 - right["score"], "passed": not right["passed"], "rationale": "flipped"}
    return right


def judge_table(name: str, s: StandIn, rank: int) -> dict[str, Any]:
    return table("openai", s, name=name, rubric=f"judge {name}", cost_rank=rank, rpm=60000, tpm=10**9,
                 max_concurrency=64)


def test_repeats_use_distinct_seeds_and_ledger_keys_and_a_rerun_is_free(tmp_path):
    def brain(prompt: str) -> dict[str, Any]:
        return default_brain(prompt)

    led = Ledger(tmp_path / "ledger.sqlite")
    with StandIn(brain=brain) as s:
        async def main():
            panel, _ = build(tmp_path, {**table("openai", s, temperature=0.7), "repeats": 3},
                             services=Services(ledger=led, retry=FAST))
            try:
                first = await panel.judge(cand(1))
                again = await panel.judge(cand(1))
            finally:
                await panel.aclose()
            return first, again

        (d, new), (d2, new2) = run(main())
        seeds = [r["body"]["seed"] for r in s.requests]
        temps = {r["body"]["temperature"] for r in s.requests}
    assert sorted(seeds) == [0, 1] and temps == {0.7}  # majority of 3: two agreeing calls suffice
    assert len(led) == 2  # one ledger entry per repeat
    assert d.accepted is True and new[0].rationale.startswith("2 of 2 repeats passed")
    assert d2.accepted is True and new2[0].cached and new2[0].usage.requests == 0
    led.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_judges_decode_deterministically_by_default(kind, tmp_path):
    with StandIn() as s:
        async def main():
            panel, _ = build(tmp_path, table(kind, s))
            try:
                return await panel.judge(cand(1))
            finally:
                await panel.aclose()

        run(main())
        (req,) = s.requests
    body = req["body"]
    assert body["temperature"] == 0.0
    assert body.get("seed") == (0 if kind == "openai" else None)  # Anthropic's API has no seed


def test_a_reserve_judges_when_a_panel_judge_is_down(tmp_path):
    with StandIn(FaultPlan(p_5xx=1.0)) as down, StandIn() as up:
        async def main():
            cfg = {"policy": "majority", "ties": "reject", "min_successful": 1, "reserve": ["backup"],
                   "teacher": [table("openai", down, name="flaky", max_attempts=2),
                               table("openai", up, name="steady"), table("openai", up, name="backup")]}
            from tgrs_agents.curation.panel import Panel
            from tgrs_agents.curation.panel_file import panel_from_dict

            panel = Panel.from_config(panel_from_dict(cfg, base_dir=tmp_path), Services(retry=FAST))
            try:
                return await panel.judge(cand(1)), panel
            finally:
                await panel.aclose()

        (d, new), panel = run(main())
    assert [v.teacher for v in new] == ["flaky", "steady", "backup"] or \
        [v.teacher for v in new] == ["steady", "flaky", "backup"]
    assert d.accepted is True and new[[v.teacher for v in new].index("flaky")].error is not None
    assert panel.stats["backup"].calls == 1 and panel.jury_report()["substitutions"] == 1


def labelled_file(tmp_path: Path, n: int = 160) -> Path:
    src = write_synthetic(tmp_path / "cands.jsonl", n, seed=5)
    out = tmp_path / "labelled.jsonl"
    with out.open("w") as f:
        for raw in src.read_text().splitlines():
            rec = json.loads(raw)
            m = re.findall(r"Answer:\s*(-?\d+)", rec["messages"][-1]["content"] or "")
            rec["label"] = bool(m) and int(m[-1]) == rec["reference"]
            f.write(json.dumps(rec) + "\n")
    return out


def panel_file(tmp_path: Path, s: StandIn, head: str, name: str = "panel.toml") -> Path:
    lines = [head]
    for rank, who in enumerate(FLIP):
        t = judge_table(who, s, rank)
        lines += ["", "[[teacher]]", *(f"{k} = {json.dumps(v)}" for k, v in t.items())]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_calibrate_scores_each_judge_and_a_run_uses_the_frozen_weights(tmp_path, capsys):
    labelled = labelled_file(tmp_path)
    rows = [json.loads(x) for x in labelled.read_text().splitlines()]
    with StandIn(brain=flip_brain) as s:
        panel = panel_file(tmp_path, s, 'policy = "majority"')
        cal = tmp_path / "calibration.json"
        assert cli_main(["calibrate", str(panel), str(labelled), "--out", str(cal), "--no-cache"]) == 0
        out = capsys.readouterr().out
        assert "sensitivity (95% CI)" in out and "wrote" in out and OA_ENV not in out
        report = json.loads(cal.read_text())
        assert report["items"] == len(rows) and report["calls"] == 3 * len(rows)
        assert report["prevalence"] == pytest.approx((sum(r["label"] for r in rows) + 1) / (len(rows) + 2), abs=1e-3)
        t = report["teachers"]
        for who, p in FLIP.items():  # the labelled interval holds the judge's true accuracy
            assert t[who]["sensitivity"]["low"] <= 1 - p + 0.02 and t[who]["specificity"]["low"] <= 1 - p + 0.02
            assert t[who]["accuracy"] == pytest.approx(1 - p, abs=0.1)
        assert t["sharp"]["weight"] > t["fair"]["weight"] > t["wild"]["weight"]
        assert set(report["dawid_skene"]["teachers"]) == set(FLIP) and report["panel_rule"]["policy"] == "majority"

        frozen = panel_file(tmp_path, s, f'policy = "weighted_mean"\nthreshold = 0.5\nweights = "{cal.name}"',
                            "frozen.toml")
        before = s.stats["requests"]
        assert cli_main(["curate", str(labelled), "--panel", str(frozen), "--out", str(tmp_path / "run"),
                         "--no-cache", "--quiet", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        calls = s.stats["requests"] - before
    jury = summary["jury"]
    assert jury["weights_source"] == f"calibration: {cal.name}"
    assert jury["weights"]["sharp"] == pytest.approx(t["sharp"]["weight"], abs=1e-3)
    assert jury["reliability"]["items"] == len(rows)
    # the sharp judge outweighs the two others together, so it alone decides almost every candidate
    assert calls < 1.2 * len(rows) and summary["calls_saved"] > 1.6 * len(rows)


def test_curate_refuses_a_judge_of_the_students_family_and_warns_of_ties(tmp_path, capsys):
    data = write_synthetic(tmp_path / "in.jsonl", 8, seed=1)
    with StandIn() as s:
        p = tmp_path / "panel.toml"
        lines = ['policy = "majority"']
        for name in ("a", "b"):
            lines += ["", "[[teacher]]", *(f"{k} = {json.dumps(v)}" for k, v in table("openai", s, name=name).items())]
        p.write_text("\n".join(lines) + "\n")
        code = cli_main(["curate", str(data), "--panel", str(p), "--out", str(tmp_path / "r1"), "--no-cache",
                         "--quiet", "--student-model", "gpt-judge-7b"])
        err = capsys.readouterr().err
        assert code == 2 and "same model family (gpt)" in err and "allow_self_judging" in err
        assert cli_main(["curate", str(data), "--panel", str(p), "--out", str(tmp_path / "r2"), "--no-cache",
                         "--quiet", "--student-model", "Qwen/Qwen2.5-0.5B-Instruct"]) == 0
        err = capsys.readouterr().err
    assert "warning:" in err and "can end in a tie" in err


GSM8K = Path(__file__).resolve().parents[3] / "shared/data/tasks/gsm8k_example_model_solutions.first50.jsonl"


@pytest.mark.skipif(not GSM8K.is_file(), reason=f"the labelled GSM8K solutions are not at {GSM8K}")
def test_calibrate_on_real_labelled_solutions(tmp_path, capsys):
    """GSM8K's example model solutions (50 questions x 4 models, labelled is_correct): calibration
    measures each judge against the labels, and the unsupervised estimate lands near them."""
    labelled = tmp_path / "gsm8k.jsonl"
    with labelled.open("w") as out:
        for q, raw in enumerate(GSM8K.read_text().splitlines()):
            rec = json.loads(raw)
            ref = re.findall(r"A:\s*(-?[\d,]+)", rec["ground_truth"])[-1].replace(",", "")
            for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
                sol = rec[model]
                out.write(json.dumps({"id": f"{q}-{model}", "task_id": str(q), "reference": ref,
                                      "label": sol["is_correct"],
                                      "messages": [{"role": "user", "content": rec["question"]},
                                                   {"role": "assistant", "content": sol["solution"]}]}) + "\n")

    def brain(prompt: str) -> dict[str, Any]:  # "A: N" is GSM8K's answer line
        return flip_brain(re.sub(r"(?m)^A:", "Answer:", prompt))

    with StandIn(brain=brain) as s:
        panel = panel_file(tmp_path, s, 'policy = "majority"')
        assert cli_main(["calibrate", str(panel), str(labelled), "--json", "--no-cache"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 200 and 0.25 < report["prevalence"] < 0.45
    for who, p in FLIP.items():
        t = report["teachers"][who]
        assert t["errors"] == 0 and abs(t["accuracy"] - (1 - p)) < 0.1
        ds = report["dawid_skene"]["teachers"][who]
        assert abs(ds["specificity"]["value"] - t["specificity"]["value"]) < 0.12
    assert report["panel_rule"]["accuracy"] > 0.85 and report["panel_rule"]["precision"] >= 0.75


def test_calibrate_names_the_line_and_field_of_a_bad_label(tmp_path, capsys):
    bad = tmp_path / "labelled.jsonl"
    bad.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "q"}], "label": True}) + "\n"
                   + json.dumps({"id": "b", "messages": [{"role": "user", "content": "q"}], "label": "yes"}) + "\n")
    with StandIn() as s:
        panel = tmp_path / "panel.toml"
        panel.write_text("[[teacher]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table("openai", s).items()))
        assert cli_main(["calibrate", str(panel), str(bad), "--no-cache"]) == 2
        assert s.stats["requests"] == 0  # the file is read before anything is paid for
    err = capsys.readouterr().err
    assert f"{bad}:2: field 'label': expected true or false" in err
