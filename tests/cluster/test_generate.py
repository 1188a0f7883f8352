"""``[generate] engine = "ray"``: the tasks split over Ray workers, a tiny-student replica on each."""

from __future__ import annotations

import json

import pytest

from tgrs_agents.loop.config import LoopConfig
from tgrs_agents.loop.ray_rollouts import split
from tgrs_agents.loop.sampling import load_tasks, rollouts
from tgrs_agents.paid.services import Services


def test_split_keeps_order_and_balances():
    for n in (0, 1, 5, 7, 8):
        for k in (1, 2, 3, 9):
            parts = split(list(range(n)), k)
            assert [x for p in parts for x in p] == list(range(n))
            assert len(parts) == max(1, min(k, n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer

    d = tmp_path_factory.mktemp("gen")
    cfg = LoopConfig(tasks={"n_train": 6, "n_eval": 2}, generate={"n": 2, "max_new_tokens": 12, "max_tokens": 40},
                     base_dir=str(d), seed=3)
    train, _ = load_tasks(cfg)
    tok = train_tokenizer([m.content or "" for t in train for m in t.messages] + ["calculator Answer: 0123456789"])
    return cfg, save(build_model(tok, seed=0), tok, d / "model"), train


def _ray(cfg: LoopConfig, workers: int) -> LoopConfig:
    return cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"engine": "ray", "workers": workers})})


def _dump(recs: list[dict]) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in recs]


def test_greedy_records_on_two_workers_equal_one_process(ray_local, student):
    cfg, model, tasks = student
    one, st1 = rollouts(cfg, model, tasks, 2, 0.0, "r1-", Services())
    two, st2 = rollouts(_ray(cfg, 2), model, tasks, 2, 0.0, "r1-", Services())
    assert len(one) == len(tasks) * 2 and one[0]["id"] == f"r1-{tasks[0].id}-s0"
    assert _dump(two) == _dump(one)  # same records, same order (task, then sample)
    assert st2.rollouts == st1.rollouts and st2.generated_tokens == st1.generated_tokens > 0


def test_sampling_on_ray_one_worker_equals_one_process_and_repeats(ray_local, student):
    """At temperature 1 the draws depend on batch composition (see tgrs_agents.loop.ray_rollouts): one
    worker equals one process exactly; two workers repeat themselves for a seed and differ by seed."""
    cfg, model, tasks = student
    one, _ = rollouts(cfg, model, tasks, 2, 1.0, "s-", Services())
    assert _dump(rollouts(_ray(cfg, 1), model, tasks, 2, 1.0, "s-", Services())[0]) == _dump(one)
    a, _ = rollouts(_ray(cfg, 2), model, tasks, 2, 1.0, "s-", Services())
    b, _ = rollouts(_ray(cfg, 2), model, tasks, 2, 1.0, "s-", Services())
    assert _dump(a) == _dump(b)
    assert [r["id"] for r in a] == [r["id"] for r in one]
    other, _ = rollouts(_ray(cfg.model_copy(update={"seed": 4}), 2), model, tasks, 2, 1.0, "s-", Services())
    assert _dump(other) != _dump(a)


def test_engine_and_workers_stay_out_of_the_fingerprint(tmp_path):
    from tgrs_agents.loop.fingerprint import section_identity

    base = LoopConfig(base_dir=str(tmp_path))
    assert section_identity(_ray(base, 4)) == section_identity(base)


def test_without_ray_one_line_names_the_extra_and_the_field(tmp_path, monkeypatch):
    import sys

    from tgrs_agents.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = _ray(LoopConfig(base_dir=str(tmp_path)), 2)
    with pytest.raises(ConfigError) as e:
        rollouts(cfg, tmp_path / "model", [], 1, 0.0, "x-", Services())
    assert e.value.field == "generate.engine" and "pip install 'tgrs-agents[ray]'" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_slices_own_error_is_said_as_it_is(ray_local, student, tmp_path):
    from tgrs_agents.errors import ConfigError

    cfg, _, tasks = student
    with pytest.raises(ConfigError) as e:  # raised on a worker, not a RayTaskError with a traceback
        rollouts(_ray(cfg, 2), tmp_path / "no-model", tasks, 1, 0.0, "x-", Services())
    assert e.value.field == "student.model" and "no-model" in str(e.value)
