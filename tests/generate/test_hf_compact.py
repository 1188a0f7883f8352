"""The compact decoding loop of the transformers backend: the same greedy tokens as ``model.generate``,
rows leave the batch when they end, per-row caps hold, top-p sampling keeps only the nucleus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tgrs_agents.generate import SamplingParams, TransformersBackend  # noqa: E402
from tgrs_agents.generate.hf import _compact_decode, _next_tokens, idle_cores  # noqa: E402
from tgrs_agents.student import tiny  # noqa: E402
from tgrs_agents.tasks import arithmetic  # noqa: E402

TASKS = arithmetic.make_tasks(6, seed=11)
DEMOS = [arithmetic.demonstration(t) for t in TASKS]


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny.train_tokenizer([m["content"] for d in DEMOS for m in d["messages"] if m.get("content")])


@pytest.fixture(scope="module")
def model(tok: Any) -> Any:
    return tiny.build_model(tok, seed=4).eval()


def convs() -> list[list[dict[str, Any]]]:
    firsts = [[t.messages[0].model_dump(exclude_none=True)] for t in TASKS]
    return firsts + [d["messages"][:3] for d in DEMOS[:3]]  # prompts of two lengths


def complete(be: TransformersBackend, cs: list[Any], params: SamplingParams, caps: list[int] | None = None) -> Any:
    async def go() -> Any:
        try:
            return await be.complete(cs, [None] * len(cs), params, max_new_tokens=caps)
        finally:
            await be.aclose()
    return asyncio.run(go())


@contextlib.contextmanager
def batch_widths(model: Any) -> Iterator[list[int]]:
    """The batch width of every forward call made inside the block."""
    widths: list[int] = []
    real = model.forward

    def spy(*a: Any, **kw: Any) -> Any:
        widths.append(kw["input_ids"].shape[0])
        return real(*a, **kw)

    model.forward = spy
    try:
        yield widths
    finally:
        del model.forward


def test_greedy_compact_equals_generate_and_rows_leave_the_batch(tok: Any, model: Any) -> None:
    params = SamplingParams(temperature=0.0, max_new_tokens=30)
    caps = [30, 3, 30, 12, 30, 1, 30, 30, 7]
    gen = complete(TransformersBackend(model, tok, decode="generate"), convs(), params, caps)
    with batch_widths(model) as widths:
        compact = complete(TransformersBackend(model, tok, decode="compact"), convs(), params, caps)
    assert compact == gen
    assert [t.n_tokens <= c for t, c in zip(compact, caps, strict=True)] == [True] * len(caps)
    assert widths[0] == len(caps) and widths[-1] < len(caps)  # ended rows left the batch
    assert widths == sorted(widths, reverse=True)


def test_a_prompt_sampled_n_times_is_prefilled_once(tok: Any, model: Any) -> None:
    cs = [c for c in convs()[:4] for _ in range(3)]  # 4 prompts x 3 samples
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    with batch_widths(model) as widths:
        compact = complete(TransformersBackend(model, tok, decode="compact"), cs, greedy)
    assert widths[0] == 4 and widths[1] <= 12  # one prefill per distinct prompt, then a row per sample
    assert compact == complete(TransformersBackend(model, tok, decode="generate"), cs, greedy)
    sampled = complete(TransformersBackend(model, tok, decode="compact"), cs,
                       SamplingParams(temperature=1.0, max_new_tokens=16, seed=3))
    assert len({t.text for t in sampled}) > 4  # the copies sample on their own


def test_auto_picks_generate_for_the_tiny_student(tok: Any, model: Any) -> None:
    assert TransformersBackend(model, tok).decode == "generate"
    assert TransformersBackend(model, tok, decode="compact").decode == "compact"
    assert 1 <= idle_cores() <= (torch.get_num_threads() or 1) + 64


def test_a_row_ends_at_its_stop_token_and_keeps_it(tok: Any, model: Any) -> None:
    prompt = torch.tensor([[5, 6, 7]])
    mask = torch.ones_like(prompt)
    free = _compact_decode(model, prompt, mask, [6], [], SamplingParams(temperature=0.0))
    stop = free[0][2]
    with torch.inference_mode():
        cut = _compact_decode(model, prompt, mask, [6], [stop], SamplingParams(temperature=0.0))
    first = free[0].index(stop)
    assert cut[0] == free[0][:first + 1]


def test_top_p_samples_only_the_nucleus() -> None:
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    drawn = _next_tokens(logits, SamplingParams(temperature=1.0, top_p=0.7))
    counts = torch.bincount(drawn, minlength=4).tolist()
    assert counts[2] == counts[3] == 0  # outside the smallest set reaching 0.7
    assert 0.55 < counts[0] / 2000 < 0.70  # renormalised: 0.5 / 0.8 = 0.625
    everything = torch.bincount(_next_tokens(logits, SamplingParams(temperature=1.0)), minlength=4).tolist()
    assert min(everything) > 0
    assert _next_tokens(logits[:1], SamplingParams(temperature=0.0)).tolist() == [0]
