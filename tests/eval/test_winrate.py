"""win_rate with deterministic fake judges (both orders, ties, failures, bootstrap) and AlpacaEval exports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unrolled.eval import Judge, Verdict, WinRate, win_rate, write_alpaca_eval


class FakeJudge(Judge):
    """``p_first = rule(instruction, first, second)``; ``None`` is a failure. Records every call."""

    def __init__(self, rule, name: str = "fake") -> None:
        self.rule, self.name, self.calls = rule, name, []

    def judge(self, instructions, first, second, references=None):
        self.calls.append((list(instructions), list(first), list(second)))
        out = []
        for i, a, b in zip(instructions, first, second, strict=True):
            p = self.rule(i, a, b)
            out.append(Verdict(None, "judge broke", 3) if p is None else Verdict(p))
        return out


def items(n: int):
    return [f"q{i}" for i in range(n)], [f"A{i}" for i in range(n)], [f"B{i}" for i in range(n)]


def test_a_judge_that_always_picks_the_first_position_gives_one_half():
    judge = FakeJudge(lambda i, a, b: 1.0, "always-first")
    result = win_rate(judge, *items(10))
    assert (result.rate, result.soft_rate, result.position_bias) == (0.5, 0.5, 0.5)
    assert (result.wins, result.ties, result.losses, result.failures, result.n) == (0, 10, 0, 0, 10)
    assert result.judge == "always-first"
    ins, a, b = items(10)
    assert judge.calls == [(ins, a, b), (ins, b, a)]  # A first, then B first


def test_a_judge_that_prefers_a_gives_one():
    judge = FakeJudge(lambda i, a, b: 0.9 if a.startswith("A") else 0.1)
    result = win_rate(judge, *items(7))
    assert result.rate == 1.0 and result.wins == 7
    assert result.soft_rate == pytest.approx(0.9)
    assert result.position_bias == pytest.approx(0.0)
    assert (result.ci_low, result.ci_high) == (1.0, 1.0)
    assert all(item.p_a == (0.9, pytest.approx(0.9)) and item.score == 1.0 for item in result.items)
    loses = win_rate(FakeJudge(lambda i, a, b: 0.2 if a.startswith("A") else 0.8), *items(7))
    assert (loses.rate, loses.losses) == (0.0, 7)


def test_ties_count_half_per_order():
    assert win_rate(FakeJudge(lambda i, a, b: 0.5), *items(4)).rate == 0.5
    # A wins when shown first, a tie when shown second: 0.75, a win
    judge = FakeJudge(lambda i, a, b: 1.0 if a.startswith("A") else 0.5)
    result = win_rate(judge, *items(4))
    assert result.rate == 0.75 and result.wins == 4
    assert [item.score for item in result.items] == [0.75] * 4


def test_failures_are_excluded_and_counted():
    def rule(i, a, b):
        if i in ("q1", "q4") and a.startswith("B"):  # only the B-first order fails
            return None
        return 0.9 if a.startswith("A") else 0.1

    result = win_rate(FakeJudge(rule), *items(6))
    assert (result.n, result.failures, result.wins, result.ties, result.losses) == (6, 2, 4, 0, 0)
    assert result.rate == 1.0  # not 4 / 6
    failed = [item for item in result.items if item.score is None]
    assert [item.instruction for item in failed] == ["q1", "q4"]
    assert failed[0].p_a == (0.9, None)
    assert failed[0].errors == ("B first: judge broke",)
    assert failed[0].attempts == 4
    # every judged order counts towards the position bias: P(first) is 0.9 on the 6 A-first orders, 0.1 on the
    # 4 B-first orders that did not fail
    assert result.position_bias == pytest.approx((6 * 0.9 + 4 * 0.1) / 10 - 0.5)


def test_every_item_failed_is_no_rate():
    result = win_rate(FakeJudge(lambda i, a, b: None), *items(3))
    assert (result.rate, result.ci_low, result.ci_high, result.soft_rate, result.position_bias) == (None,) * 5
    assert result.failures == 3 and result.wins == result.ties == result.losses == 0
    json.dumps(result.to_dict())


def test_bootstrap_interval_contains_the_rate_and_shrinks_with_more_items():
    def rule(i, a, b):  # A wins items 0, 1 of every 3 whichever the order, loses the rest
        k = int(i[1:])
        a_better = (k % 3 != 2) == a.startswith("A")
        return 0.8 if a_better else 0.2

    small, large = win_rate(FakeJudge(rule), *items(12)), win_rate(FakeJudge(rule), *items(300))
    for result in (small, large):
        assert result.rate == pytest.approx(2 / 3, abs=0.01)
        assert result.ci_low < result.rate < result.ci_high
    assert large.ci_high - large.ci_low < (small.ci_high - small.ci_low) / 2
    # the percentile bootstrap, computed independently
    scores = np.array([1.0 if k % 3 != 2 else 0.0 for k in range(12)])
    rng = np.random.default_rng(0)
    means = [scores[rng.integers(0, 12, 12)].mean() for _ in range(2000)]
    assert small.ci_low == pytest.approx(np.quantile(means, 0.025), abs=0.03)
    assert small.ci_high == pytest.approx(np.quantile(means, 0.975), abs=0.03)
    again = win_rate(FakeJudge(rule), *items(12))
    assert (again.ci_low, again.ci_high) == (small.ci_low, small.ci_high)  # seeded
    other = win_rate(FakeJudge(rule), *items(12), confidence=0.5)
    assert other.ci_high - other.ci_low < small.ci_high - small.ci_low


def test_to_dict_is_json():
    result = win_rate(FakeJudge(lambda i, a, b: 0.7), *items(3), n_bootstrap=10)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["judge"] == "fake" and data["n"] == 3 and len(data["items"]) == 3
    assert data["items"][0]["p_a"] == [0.7, pytest.approx(0.3)]
    assert set(data) >= {"rate", "ci_low", "ci_high", "soft_rate", "position_bias", "failures", "ties"}
    assert isinstance(result, WinRate)


def test_bad_inputs():
    ins, a, b = items(3)
    with pytest.raises(ValueError, match="equal lengths"):
        win_rate(FakeJudge(lambda *x: 0.5), ins, a, b[:2])
    with pytest.raises(ValueError, match="confidence"):
        win_rate(FakeJudge(lambda *x: 0.5), ins, a, b, confidence=1.0)

    class Short(FakeJudge):
        def judge(self, instructions, first, second, references=None):
            return super().judge(instructions, first, second)[:-1]

    with pytest.raises(ValueError, match="returned 2 verdicts for 3 items"):
        win_rate(Short(lambda *x: 0.5), ins, a, b)


def test_write_alpaca_eval_round_trips(tmp_path):
    ins, outs = ["Say hi", "Écris un poème"], ["hi", "Les roses sont rouges…"]
    path = write_alpaca_eval(tmp_path / "sub" / "constrained.json", ins, outs, "constrained-sft")
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    assert records == [
        {"instruction": i, "output": o, "generator": "constrained-sft", "dataset": "unrolled"}
        for i, o in zip(ins, outs, strict=True)
    ]
    assert all(list(r) == ["instruction", "output", "generator", "dataset"] for r in records)
    write_alpaca_eval(path, ins[:1], outs[:1], "erm", dataset="mine")  # replaced whole
    assert json.loads(path.read_text(encoding="utf-8")) == [
        {"instruction": "Say hi", "output": "hi", "generator": "erm", "dataset": "mine"}
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == ["constrained.json"]  # no temporary file left
    with pytest.raises(ValueError, match="outputs"):
        write_alpaca_eval(path, ins, outs[:1], "erm")
