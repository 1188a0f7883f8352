"""``[generator]``: plain distillation from a served teacher. An OpenAI-compatible model (the loopback
stand-in, answering as a calculator agent) writes each round's candidates through the run's paid-call
services; the panel judges them, the local tiny student trains on what it keeps and is what pass@k
measures. Also: the section's errors and fingerprint, and the vllm student (GPU only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.cli import main
from tgrs_agents.curation.store import iter_jsonl
from tgrs_agents.errors import BudgetExhausted, ConfigError, RunStoreError
from tgrs_agents.loop.config import LoopConfig, load_run_config
from tgrs_agents.loop.fingerprint import identity
from tgrs_agents.loop.rounds import ExpertIteration
from tgrs_agents.loop.sampling import load_tasks, rollouts, student_backend

pytest.importorskip("openai")

from api_judge_kit import build, run, table  # noqa: E402

from tgrs_agents.paid.cost import Budget  # noqa: E402
from tgrs_agents.paid.services import Services  # noqa: E402
from tgrs_agents.testing.served_agent import QUESTION, calculator_agent  # noqa: E402
from tgrs_agents.testing.standin import StandIn  # noqa: E402

GEN_ENV, GEN_KEY = "TGRS_TEST_GEN_KEY", "sk-test-gen-5e1d0c9a"
PRICE_IN, PRICE_OUT = 2.0, 8.0
SYSTEM = "Use the calculator, then reply with 'Answer: N'."


def teacher(body: dict[str, Any]) -> dict[str, Any] | None:
    """The served calculator agent, off by one when the result is odd (so the panel has something to
    reject); a judge's request (no tools) gets the stand-in's verdict."""
    return calculator_agent(body, off_by_one=True)


def config(tmp_path: Path, srv: StandIn, *, rounds: int = 1, extra: str = "") -> Path:
    p = tmp_path / "run.toml"
    p.write_text(f"""rounds = {rounds}
eval_k = 1
[tasks]
n_train = 6
n_eval = 4
[generate]
n = 2
[warm_start]
n_seed = 20
steps = 5
[sft]
steps = 3
batch_size = 4
[generator]
model = "teacher-m"
base_url = "{srv.url_openai}"
api_key_env = "{GEN_ENV}"
price_input_per_mtok = {PRICE_IN}
price_output_per_mtok = {PRICE_OUT}
system = "{SYSTEM}"
{extra}""")
    return p


def cost(requests: list[dict[str, Any]]) -> float:
    """What the stand-in billed, at the configured prices (the usage it reported, request by request)."""
    return sum(r["usage"]["prompt_tokens"] * PRICE_IN + r["usage"]["completion_tokens"] * PRICE_OUT
               for r in requests) / 1e6


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GEN_ENV, GEN_KEY)


@pytest.mark.slow
def test_tgrs_run_distils_from_a_served_generator(tmp_path: Path, key: None) -> None:
    out = tmp_path / "run"
    with StandIn(chat=teacher) as srv:
        p = config(tmp_path, srv)
        assert main(["run", str(p), "--out", str(out)]) == 0
        served = list(srv.requests)
        assert main(["run", str(p), "--out", str(out)]) == 0  # resumes: nothing is sampled or paid again
        assert len(srv.requests) == len(served)

    # every candidate came from the server: 6 tasks x 2 samples, a tool call then an answer each
    rd = out / "round-1"
    cands = list(iter_jsonl(rd / "candidates.jsonl"))
    assert len(cands) == 12 and len(served) == 2 * len(cands)  # evaluation never asked the server
    assert {r["model"] for r in served} == {"teacher-m"} and all(r["has_key"] for r in served)
    assert all(r["body"]["tools"][0]["function"]["name"] == "calculator" for r in served)
    assert all(r["body"]["messages"][0] == {"role": "system", "content": SYSTEM} for r in served)
    for c in cands:
        assert c["metadata"]["generator"] == "openai:teacher-m" and c["id"].startswith("r1-")
        question, call, result, answer = c["messages"]  # the generator's instructions are not the student's
        assert question["role"] == "user"
        args = json.loads(call["tool_calls"][0]["function"]["arguments"])
        assert args == {"expression": QUESTION.match(question["content"]).group(1)}
        value = int(result["content"])
        assert answer == {"role": "assistant", "content": f"Answer: {value + 1 if value % 2 else value}"}

    # the panel kept exactly the right ones, and the student trained on them
    right = {c["id"] for c in cands if int(c["messages"][2]["content"]) % 2 == 0}
    accepted = {r["id"] for r in iter_jsonl(rd / "curate" / "accepted.jsonl")}
    assert accepted == right and 0 < len(right) < len(cands)
    summary = json.loads((out / "summary.json").read_text())
    r1 = summary["rounds"][1]
    assert r1["samples"] == 12 and r1["accepted"] == len(right) and r1["sft_rows"] > 0
    assert (rd / "model" / "config.json").exists() and r1["eval_tasks"] == 4  # the student is evaluated
    # costed like a judge: the run's budget journals what the server billed, under the generate stage
    assert r1["stage_cost_usd"]["generate"] == pytest.approx(cost(served), rel=1e-3, abs=1e-6)
    assert cost(served) > 0

    ident = json.loads((out / "run.json").read_text())["identity"]
    assert ident["generator"] == {"backend": "openai", "model": "teacher-m", "base_url": srv.url_openai,
                                  "system": SYSTEM}


def test_the_generator_shares_the_runs_limiter_and_budget_with_the_judges(tmp_path: Path, key: None) -> None:
    with StandIn(chat=teacher) as srv:
        cfg = load_run_config(config(tmp_path, srv, extra="rpm = 600\n"))
        train, _ = load_tasks(cfg)
        services = Services()
        backend = student_backend(cfg, cfg.generator, services)  # its limits make the endpoint's limiter
        build(tmp_path, table("openai", srv, api_key_env=GEN_ENV), services=services)  # a judge, same endpoint
        (limiter,) = services.limiters.all().values()  # one limiter for the endpoint: judge and generator
        assert backend.limiter is limiter and limiter.limits.rpm == 600
        run(backend.aclose())

        recs, _ = rollouts(cfg, cfg.generator, train[:2], 1, 1.0, "x-", services)
        assert len(recs) == 2 and services.budget.spent_usd == pytest.approx(cost(srv.requests), abs=1e-9)
        n = len(srv.requests)
        tight = Services(budget=Budget(limit_usd=services.budget.spent_usd / 10))
        with pytest.raises(BudgetExhausted):  # checked before the call: nothing is sent
            rollouts(cfg, cfg.generator, train[:2], 1, 1.0, "y-", tight)
        assert len(srv.requests) == n and tight.budget.refused > 0


def test_generator_mistakes_name_the_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "run.toml"
    p.write_text('rounds = 1\n[student]\nbackend = "openai"\nmodel = "m"\n')
    with pytest.raises(ConfigError) as ei:
        load_run_config(p)
    assert ei.value.field == "student.backend" and "[generator]" in ei.value.detail
    p.write_text('[generator]\nbase_url = "http://127.0.0.1:9/v1"\n')
    with pytest.raises(ConfigError) as ei:
        load_run_config(p)
    assert (ei.value.file, ei.value.field) == (str(p), "generator.model")
    p.write_text('[generator]\nbackend = "vllm"\nmodel = "m"\n')
    with pytest.raises(ConfigError, match="openai") as ei:
        load_run_config(p)
    assert ei.value.field == "generator.backend"

    monkeypatch.delenv("TGRS_TEST_NO_KEY", raising=False)
    p.write_text('[generator]\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "TGRS_TEST_NO_KEY"\n'
                 'price_input_per_mtok = 0\nprice_output_per_mtok = 0\n')
    cfg = load_run_config(p)
    with pytest.raises(ConfigError) as ei:
        student_backend(cfg, cfg.generator, Services())
    assert (ei.value.file, ei.value.field) == (str(p), "generator") and "TGRS_TEST_NO_KEY" in ei.value.detail
    p.write_text('[generator]\nmodel = "my-own-model"\napi_key_env = ""\nbase_url = "http://127.0.0.1:9/v1"\n')
    cfg = load_run_config(p)
    with pytest.raises(ConfigError, match="price_input_per_mtok") as ei:
        student_backend(cfg, cfg.generator, Services())
    assert ei.value.field == "generator"


def test_the_generator_is_in_the_fingerprint_but_its_key_prices_and_limits_are_not(tmp_path: Path) -> None:
    def loop(**gen: Any) -> ExpertIteration:
        g = {"model": "teacher-m", "base_url": "http://127.0.0.1:9/v1", **gen} if gen else None
        return ExpertIteration(LoopConfig(base_dir=str(tmp_path), generator=g), out, log=lambda s: None)

    out = tmp_path / "run"
    assert "generator" not in identity(LoopConfig(), "filtered")  # runs made before [generator] keep theirs
    loop().claim()
    with pytest.raises(RunStoreError, match=r"generator\.model: \(unset\) -> \"teacher-m\""):
        loop(model="teacher-m").claim()
    out = tmp_path / "run2"
    loop(model="teacher-m").claim()
    loop(model="teacher-m", api_key_env="OTHER", price_input_per_mtok=1.0, price_output_per_mtok=3.0,
         rpm=60, tpm=1000, max_concurrency=4).claim()  # operational: resumes
    with pytest.raises(RunStoreError, match=r"generator\.model: \"teacher-m\" -> \"bigger\""):
        loop(model="bigger").claim()
    with pytest.raises(RunStoreError, match=r"generator\.base_url"):
        loop(model="teacher-m", base_url="http://127.0.0.1:8/v1").claim()


def test_the_vllm_backend_imports_without_vllm() -> None:
    import tgrs_agents.generate.vllm_backend as vb

    assert vb.VLLMBackend.__name__ == "VLLMBackend"  # vllm itself is imported when a backend is built


def _gpu_and_vllm() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _gpu_and_vllm(), reason="the vllm student needs vllm and a CUDA GPU")
def test_a_vllm_student_runs_a_round(tmp_path: Path) -> None:
    p = tmp_path / "run.toml"
    p.write_text('rounds = 1\neval_k = 2\n[student]\nbackend = "vllm"\n[tasks]\nn_train = 16\nn_eval = 8\n'
                 '[warm_start]\nsteps = 50\n[sft]\nsteps = 10\n')
    out = tmp_path / "run"
    assert main(["run", str(p), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1] and summary["rounds"][1]["samples"] == 16 * 8


def test_the_example_config_distils_a_served_teacher_into_a_local_student() -> None:
    cfg = load_run_config(Path(__file__).parents[2] / "examples" / "distill-served.toml")
    assert cfg.generator is not None and cfg.generator.base_url == "http://127.0.0.1:8000/v1"
    assert cfg.student.backend == "transformers" and cfg.rounds > 0 and cfg.sft.lora_r == 16
    assert "generator" in identity(cfg, "filtered")


def test_a_served_generate_stage_killed_mid_round_keeps_its_chunks_and_pays_only_for_the_rest(
        tmp_path: Path, key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from tgrs_agents.loop import stream

    out = tmp_path / "run"
    append = stream.CandidateFile.append
    written: list[int] = []

    def dies_at_the_third_chunk(self: Any, recs: list[dict[str, Any]]) -> Any:
        if len(written) == 2:  # the third chunk was sampled (and paid for); the process dies before it is kept
            raise KeyboardInterrupt
        written.append(len(recs))
        return append(self, recs)

    def sampled(srv: StandIn) -> list[dict[str, Any]]:  # the generator's requests (a judge's carry no tools)
        return [r for r in srv.requests if r["body"].get("tools")]

    with StandIn(chat=teacher) as srv:
        p = config(tmp_path, srv)
        monkeypatch.setattr(stream.CandidateFile, "append", dies_at_the_third_chunk)
        with pytest.raises(KeyboardInterrupt):
            main(["run", str(p), "--out", str(out)])
        cands = out / "round-1" / "candidates.jsonl"
        kept = cands.read_bytes()
        first = len(sampled(srv))
        monkeypatch.setattr(stream.CandidateFile, "append", append)
        assert main(["run", str(p), "--out", str(out)]) == 0
        again = len(sampled(srv)) - first

    # 6 tasks in chunks of one task, 2 samples each, 2 requests a sample: the kill kept 2 chunks (4 lines),
    # with the third sampled and the others in flight (SERVED_AHEAD chunks are sampled at once)
    assert written == [2, 2] and kept.count(b"\n") == 4 and 3 * 4 <= first <= 6 * 4
    assert cands.read_bytes().startswith(kept)  # what the killed run kept is kept, byte for byte
    assert len(list(iter_jsonl(cands))) == 12
    assert again == (12 - 4) * 2  # the rest, and nothing kept was asked for again
    # paid twice: only the chunks in flight when the process died
    assert 4 <= first + again - 12 * 2 <= stream.SERVED_AHEAD * 4
