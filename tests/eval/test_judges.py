"""Pairwise judges against direct computations: MiniLM embeddings, a tiny Llama's logits, a stub HTTP server."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from torch import nn

from unrolled.carriers import DataNotFoundError, minilm_path
from unrolled.eval import (
    SYSTEM_PROMPT,
    USER_PROMPT,
    LocalLMJudge,
    OpenAIJudge,
    ReferenceJudge,
    pairwise_messages,
    verdict_token_ids,
    win_rate,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# -- ReferenceJudge -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_judge():
    pytest.importorskip("transformers")
    try:
        minilm_path()
    except DataNotFoundError as exc:
        pytest.skip(f"the all-MiniLM-L6-v2 carrier is not installed: {exc}")
    return ReferenceJudge()


REF = ["The capital of France is Paris.", "Water boils at 100 degrees Celsius at sea level."]
INS = ["What is the capital of France?", "At what temperature does water boil?"]
GOOD = ["Paris is the capital of France.", "At sea level water boils at 100 °C."]
BAD = ["I like turtles and long walks on the beach.", "The stock market closed higher on Tuesday."]


def test_reference_judge_swapping_the_outputs_swaps_the_verdict_exactly(reference_judge):
    first = [*GOOD, BAD[0], "Paris."]
    second = [*BAD, GOOD[1], "It is Paris, in France."]
    ins, ref = [*INS, INS[0], INS[0]], [*REF, REF[0], REF[0]]
    ab = reference_judge.judge(ins, first, second, ref)
    ba = reference_judge.judge(ins, second, first, ref)
    for x, y in zip(ab, ba, strict=True):
        assert x.p_first == 1.0 - y.p_first
        assert y.p_first == 1.0 - x.p_first


def test_reference_judge_prefers_the_reference_itself(reference_judge):
    verdicts = reference_judge.judge(INS, REF, BAD, REF)
    assert all(v.p_first > 0.99 and v.error is None for v in verdicts)
    assert reference_judge.name == "reference:all-MiniLM-L6-v2"


def test_reference_judge_embeddings_are_sentence_transformers_mean_pooling(reference_judge):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    model = AutoModel.from_pretrained(str(minilm_path())).eval()
    texts = [*REF, *BAD, "short"]
    expected = []
    with torch.no_grad():
        for text in texts:  # one sentence at a time, no padding: the mean of its token states
            hidden = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
            mean = hidden.sum(0) / hidden.shape[0]
            expected.append(mean / mean.norm())
    got = reference_judge.embed(texts)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-4)
    sims = reference_judge.similarities(REF, REF)
    assert sims == pytest.approx([1.0, 1.0], abs=1e-6)


def test_reference_judge_ties_count_half(reference_judge):
    verdicts = reference_judge.judge(INS, GOOD, GOOD, REF)
    assert [v.p_first for v in verdicts] == [0.5, 0.5]
    result = win_rate(reference_judge, INS, GOOD, GOOD, REF, n_bootstrap=50)
    assert result.rate == 0.5
    assert (result.ties, result.wins, result.losses) == (2, 0, 0)
    assert all(item.score == 0.5 for item in result.items)


def test_reference_judge_needs_references(reference_judge):
    with pytest.raises(ValueError, match="references"):
        reference_judge.judge(INS, GOOD, BAD)


# -- LocalLMJudge ---------------------------------------------------------------------------------------------------

ITEMS = [
    ("what is the capital of france", "paris is the capital", "i do not know"),
    ("tell me a joke", "why did the chicken cross the road to get to the other side", "no"),
    ("say hello", "hello", "hello there my good friend how are you today"),
]
TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} {{ message['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT {% endif %}"
)


def make_tokenizer(chat_template: bool = True, drop: str | None = None):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    split = pre_tokenizers.Whitespace()
    text = " ".join([SYSTEM_PROMPT, USER_PROMPT, *(" ".join(item) for item in ITEMS), "MARK"])
    words = [w for w, _ in split.pre_tokenize_str(text) if w != drop]
    specials = ["<pad>", "<eos>", "<unk>", "system", "user", "ASSISTANT"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*specials, "m", "M", *words]))}
    if drop is not None:
        vocab.pop(drop)
        vocab = {w: i for i, w in enumerate(vocab)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = split
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat_template:
        tok.chat_template = TEMPLATE
    return tok


def tiny_llama(vocab: int, seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=vocab, pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg).eval()


def columns(items=ITEMS):
    return [list(c) for c in zip(*items, strict=True)]


@pytest.mark.parametrize("chat_template", [True, False])
def test_local_judge_batched_equals_one_at_a_time(chat_template):
    tok = make_tokenizer(chat_template)
    model = tiny_llama(len(tok))
    ins, first, second = columns()
    lengths = {len(LocalLMJudge(model, tok).prompt_ids(*item)) for item in ITEMS}
    assert len(lengths) == len(ITEMS)  # different lengths: the batch is left-padded
    batched = LocalLMJudge(model, tok, batch_size=8).judge(ins, first, second)
    single = LocalLMJudge(model, tok, batch_size=1).judge(ins, first, second)
    for b, s in zip(batched, single, strict=True):
        assert b.p_first == pytest.approx(s.p_first, abs=1e-5)
        assert 0.0 < b.p_first < 1.0


def test_local_judge_is_the_softmax_of_the_two_verdict_logits():
    tok = make_tokenizer()
    model = tiny_llama(len(tok), seed=1)
    ins, first, second = columns()
    verdicts = LocalLMJudge(model, tok, batch_size=2).judge(ins, first, second)
    m_id, big_m_id = tok.convert_tokens_to_ids("m"), tok.convert_tokens_to_ids("M")
    assert verdict_token_ids(tok) == (m_id, big_m_id)
    for (instruction, a, b), verdict in zip(ITEMS, verdicts, strict=True):
        text = tok.apply_chat_template(
            pairwise_messages(instruction, a, b), tokenize=False, add_generation_prompt=True
        )
        assert text.rstrip().endswith("ASSISTANT")
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        expected = torch.exp(logits[m_id]) / (torch.exp(logits[m_id]) + torch.exp(logits[big_m_id]))
        assert verdict.p_first == pytest.approx(float(expected), abs=1e-5)


class MarkerLM(nn.Module):
    """Favours "m" when the first output (between the labels "( m )" and "( M )") holds the marker token."""

    def __init__(self, tok) -> None:
        super().__init__()
        self.vocab = len(tok)
        self.ids = {w: tok.convert_tokens_to_ids(w) for w in ("(", ")", "m", "M", "MARK")}
        self.calls: list[tuple[int, int]] = []

    def _find(self, row: list[int], label: str) -> int:
        pattern = [self.ids["("], self.ids[label], self.ids[")"]]
        return next(i for i in range(len(row)) if row[i : i + 3] == pattern)

    def forward(self, input_ids, attention_mask):
        self.calls.append(tuple(input_ids.shape))
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for b, (row, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist(), strict=True)):
            real = [t for t, keep in zip(row, mask, strict=True) if keep]
            start, end = self._find(real, "m"), self._find(real, "M")
            winner = "m" if self.ids["MARK"] in real[start:end] else "M"
            logits[b, -1, self.ids[winner]] = 3.0
        return logits


def test_local_judge_swapping_the_outputs_swaps_the_verdict():
    tok = make_tokenizer()
    stub = MarkerLM(tok)
    judge = LocalLMJudge(stub, tok, batch_size=2)
    assert judge.name == "local:MarkerLM"
    ins = ["say hello", "tell me a joke", "say hello"]
    marked, plain = ["MARK hello", "MARK no", "hello MARK"], ["hello", "no", "hello there"]
    ab, ba = judge.judge(ins, marked, plain), judge.judge(ins, plain, marked)
    p_win = float(torch.tensor([3.0, 0.0]).softmax(0)[0])
    assert [v.p_first for v in ab] == pytest.approx([p_win] * 3)
    assert [v.p_first for v in ba] == pytest.approx([1 - p_win] * 3)
    assert [c[0] for c in stub.calls] == [2, 1, 2, 1]  # batches of two
    result = win_rate(judge, ins, marked, plain, n_bootstrap=50)
    assert (result.rate, result.position_bias, result.failures) == (1.0, pytest.approx(0.0, abs=1e-6), 0)


def test_local_judge_cuts_long_outputs_to_max_length():
    tok = make_tokenizer()
    judge = LocalLMJudge(MarkerLM(tok), tok, max_length=10_000)
    overhead = len(judge.prompt_ids("say hello", "", ""))
    judge.max_length = overhead + 20
    long = " ".join(["hello there my good friend"] * 40)
    ids = judge.prompt_ids("say hello", long, "MARK " + long)
    assert len(ids) <= judge.max_length
    assert ids[-1] == tok.convert_tokens_to_ids("ASSISTANT")  # the question and the answer slot survive
    assert ids[0] == tok.convert_tokens_to_ids("system")  # so does the start: the outputs were cut
    assert judge.judge(["say hello"], ["MARK " + long], [long])[0].p_first > 0.5


def test_verdict_tokens_must_be_single_distinct_tokens():
    with pytest.raises(ValueError, match="'M' is not a single token"):
        verdict_token_ids(make_tokenizer(drop="M"))
    tok = make_tokenizer()
    with pytest.raises(ValueError, match="same ids"):
        verdict_token_ids(tok, ("m", "m"))


# -- OpenAIJudge against a stub server ----------------------------------------------------------------------------


def first_output(user: str) -> str:
    return user.split("### Output (m)")[1].split("### Output (M)")[0]


class StubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout)
            pass

    def do_POST(self) -> None:
        server = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **request})
        mode = server.modes.pop(0) if len(server.modes) > 1 else server.modes[0]
        winner = "m" if "GOOD" in first_output(request["messages"][-1]["content"]) else "M"
        loser = "M" if winner == "m" else "m"
        message = {"role": "assistant", "content": winner}
        choice: dict = {"index": 0, "message": message, "logprobs": None}
        if mode == "slow":
            time.sleep(0.5)
        if mode in ("logprobs", "slow"):
            top = [(f" {winner}", 0.6), ("x", 0.25), (loser, 0.15)]
            entries = [{"token": t, "logprob": float(torch.tensor(p).log()), "bytes": None} for t, p in top]
            choice["logprobs"] = {"content": [{"token": winner, "logprob": -0.5, "top_logprobs": entries}]}
        elif mode == "maybe":
            message["content"] = "maybe"
            choice["logprobs"] = {"content": [{"token": "maybe", "logprob": 0.0, "top_logprobs": []}]}
        elif mode == "500":
            return self._send(500, b'{"error": "overloaded"}')
        elif mode == "400":
            return self._send(400, b'{"error": "bad request"}')
        elif mode == "malformed":
            return self._send(200, b'{"choices": [ not json')
        return self._send(200, json.dumps({"choices": [choice]}).encode())


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    httpd.modes, httpd.requests = ["logprobs"], []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def client(server, **kw) -> tuple[OpenAIJudge, list[float]]:
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/"
    judge = OpenAIJudge(url, "judge-model", api_key="sk-test", sleep=sleeps.append, **kw)
    return judge, sleeps


def test_openai_judge_reads_logprobs_and_both_orders_are_sent(server):
    judge, sleeps = client(server)
    ins, a, b = ["q1", "q2"], ["GOOD answer one", "GOOD answer two"], ["bad one", "bad two"]
    result = win_rate(judge, ins, a, b, n_bootstrap=50)
    assert (result.rate, result.failures, result.judge) == (1.0, 0, judge.name)
    assert judge.name.startswith("openai:judge-model@http://127.0.0.1:")
    for item in result.items:
        assert item.p_a == (pytest.approx(0.8), pytest.approx(0.8))  # 0.6 / (0.6 + 0.15), " m" stripped
    assert result.soft_rate == pytest.approx(0.8)
    assert sleeps == []
    assert len(server.requests) == 4
    for req in server.requests:
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
        assert (req["model"], req["max_tokens"], req["temperature"]) == ("judge-model", 1, 0)
        assert req["logprobs"] is True and req["top_logprobs"] == 20
        assert [m["role"] for m in req["messages"]] == ["system", "user"]
    firsts = sorted(first_output(r["messages"][1]["content"]).strip() for r in server.requests)
    assert firsts == sorted(a + b)  # each output shown first once


def test_openai_judge_content_only(server):
    server.modes = ["content"]
    judge, _ = client(server)
    verdicts = judge.judge(["q", "q"], ["GOOD", "meh"], ["meh", "GOOD"])
    assert [(v.p_first, v.attempts) for v in verdicts] == [(1.0, 1), (0.0, 1)]


def test_openai_judge_retries_a_server_error(server):
    server.modes = ["500", "logprobs"]
    judge, sleeps = client(server, backoff=0.5)
    (verdict,) = judge.judge(["q"], ["GOOD"], ["bad"])
    assert (verdict.p_first, verdict.attempts, verdict.error) == (pytest.approx(0.8), 2, None)
    assert sleeps == [0.5]


def test_openai_judge_timeouts_fail_after_the_retries(server):
    server.modes = ["slow"]
    judge, sleeps = client(server, timeout=0.2, max_retries=2)
    result = win_rate(judge, ["q"], ["GOOD"], ["bad"], n_bootstrap=50)
    assert (result.failures, result.rate, result.ci_low, result.wins, result.ties) == (1, None, None, 0, 0)
    assert result.items[0].attempts == 6
    assert "failed after 3 attempts" in result.items[0].errors[0]
    assert "timed out" in result.items[0].errors[0].lower()
    assert sleeps == [1.0, 2.0, 1.0, 2.0]


@pytest.mark.parametrize(("mode", "why"), [("malformed", "bad response"), ("maybe", "no verdict")])
def test_openai_judge_unparseable_answers_are_retried_then_fail(server, mode, why):
    server.modes = [mode]
    judge, sleeps = client(server)
    (verdict,) = judge.judge(["q"], ["GOOD"], ["bad"])
    assert (verdict.p_first, verdict.attempts) == (None, 4)
    assert why in verdict.error
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(server.requests) == 4


def test_openai_judge_client_errors_are_not_retried(server):
    server.modes = ["400"]
    judge, sleeps = client(server)
    (verdict,) = judge.judge(["q"], ["GOOD"], ["bad"])
    assert (verdict.p_first, verdict.attempts, sleeps) == (None, 1, [])
    assert "HTTP 400" in verdict.error
    assert len(server.requests) == 1


def test_openai_judge_connection_refused_is_a_failure():
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "m", max_retries=1, sleep=lambda s: None, timeout=1.0)
    (verdict,) = judge.judge(["q"], ["a"], ["b"])
    assert verdict.p_first is None and verdict.attempts == 2 and verdict.error
