"""The OpenAI-compatible server on the demo's models: the official client, hostile requests, the
fields it serves and refuses, lm-eval through it, load, the page."""
import collections
import json
import os
import shutil
import socket
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import openai
import pytest
import torch

from conftest import REPO
from workflow_scripts.lib.serving.model_notes import answered_questions

pytestmark = pytest.mark.slow
PROMPTS = ["安宁市位于哪个省？", "请介绍一下你自己。", "哪条河流经青松市？", "王勇研究什么？"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(models, *options, log=None):
    """A server of a model directory (or a list of them) on a free port of 127.0.0.1, its log to
    `log`; yields its base URL once /health answers."""
    port = free_port()
    log = log or Path(tempfile.mkdtemp()) / "serve.log"
    models = [str(model) for model in (models if isinstance(models, list) else [models])]
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "workflow_scripts.serving.serve", *models,
                                    "--port", str(port), *options], cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            with suppress(OSError):
                if health(url)["status"] == "ok":
                    break
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def health(url):
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return json.load(response)


def post(url, path, body, headers=None, with_headers=False):
    """(status, parsed JSON[, response headers]) of a POST; `body` bytes are sent as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            result = response.status, json.load(response), response.headers
    except urllib.error.HTTPError as err:
        result = err.code, json.load(err), err.headers
    return result if with_headers else result[:2]


@pytest.fixture(scope="module")
def sft_model(built):
    return built / "results" / "sft_model"


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    return tmp_path_factory.mktemp("serve") / "serve.log"


@pytest.fixture(scope="module")
def server(sft_model, built, server_log):
    with serving([sft_model, built / "results" / "base_model"], "--max-queue", "16", "--max-tokens", "200",
                 log=server_log) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def terminal_answer(model, prompt):
    result = subprocess.run([sys.executable, "-m", "workflow_scripts.serving.chat", str(model), "--prompt", prompt,
                             "--temperature", "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.removesuffix("\n")


def ask(client, prompt, **options):
    return client.chat.completions.create(model="sft_model", messages=[{"role": "user", "content": prompt}],
                                          temperature=0, **options)


def streamed(client, prompt, **options):
    """(joined text, finish_reason, usage) of a streamed greedy answer."""
    chunks = list(ask(client, prompt, stream=True, stream_options={"include_usage": True}, **options))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [finish] = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, finish, chunks[-1].usage


def test_openai_client_gets_the_terminal_chats_greedy_answer(client, sft_model):
    expected = terminal_answer(sft_model, PROMPTS[0])
    reply = ask(client, PROMPTS[0])
    assert reply.choices[0].message.content == expected and expected
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 5 and reply.usage.completion_tokens > 0
    text, finish, usage = streamed(client, PROMPTS[0])
    assert (text, finish) == (expected, "stop")
    assert usage.completion_tokens == reply.usage.completion_tokens


def test_stop_and_max_tokens_are_honoured(client):
    full = ask(client, PROMPTS[0]).choices[0].message.content
    stop = full[3:5]
    reply = ask(client, PROMPTS[0], stop=[stop])
    assert reply.choices[0].message.content == full[:full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"
    assert streamed(client, PROMPTS[0], stop=stop)[0] == full[:full.index(stop)]
    short = ask(client, PROMPTS[0], max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    assert full.startswith(short.choices[0].message.content)


def test_models_completions_and_the_page(client, server, sft_model):
    assert [m.id for m in client.models.list().data] == ["sft_model", "base_model"]
    assert client.models.retrieve("base_model").id == "base_model"
    chat, base = client.models.retrieve("sft_model").model_extra, client.models.retrieve("base_model").model_extra
    assert chat["chat"] is True and base["chat"] is False
    assert len(chat["examples"]) == 3 and chat["examples"] == answered_questions(sft_model)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    completion = client.completions.create(model="sft_model", prompt="安宁市", max_tokens=7, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 7 and completion.choices[0].finish_reason == "length"
    with urllib.request.urlopen(server + "/", timeout=10) as page:
        html = page.read().decode()
    assert "/v1/chat/completions" in html and "http" not in html.replace("http://", "").split("<script>")[0]


def test_n_choices_logprobs_and_a_seed_that_holds_under_load(client):
    """A seeded request gives the same choices alone and while the server generates for others."""
    def sampled():
        return client.chat.completions.create(model="sft_model", messages=[{"role": "user", "content": PROMPTS[1]}],
                                              n=3, temperature=1.0, seed=7, max_tokens=12, logprobs=True,
                                              top_logprobs=3)
    alone = sampled()
    with ThreadPoolExecutor(8) as pool:
        others = [pool.submit(ask, client, prompt, max_tokens=40) for prompt in PROMPTS * 2]
        busy = sampled()
        assert all(other.result().choices for other in others)
    texts = [choice.message.content for choice in alone.choices]
    assert [choice.message.content for choice in busy.choices] == texts and len(set(texts)) > 1
    assert sum(len(choice.logprobs.content) for choice in alone.choices) == alone.usage.completion_tokens
    for choice in alone.choices:
        entries = choice.logprobs.content
        assert b"".join(bytes(e.bytes) for e in entries).decode(errors="replace").startswith(choice.message.content)
        for entry in entries:
            tops = [top.logprob for top in entry.top_logprobs]
            assert len(tops) == 3 and tops == sorted(tops, reverse=True) and entry.logprob <= 0


def test_echo_gives_the_prompt_logprobs_the_model_gives(client, built):
    """What lm-eval's loglikelihood tasks read: token-id prompts, echo, logprobs, max_tokens 0."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model_dir = built / "results" / "base_model"
    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in ("安宁市位于", "王勇研究什么")]
    out = client.completions.create(model="base_model", prompt=ids, echo=True, logprobs=2, max_tokens=0)
    for choice, prompt in zip(out.choices, ids):
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([prompt])).logits[0, :-1], -1)
        expected = logprobs[torch.arange(len(prompt) - 1), prompt[1:]].tolist()
        assert choice.logprobs.token_logprobs[0] is None
        assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)
        assert choice.text == tokenizer.decode(prompt) and choice.finish_reason == "length"
    assert out.usage.completion_tokens == 0
    text = client.completions.create(model="base_model", prompt="青松市", echo=True, logprobs=0, max_tokens=0)
    assert text.choices[0].text == "青松市" and None not in text.choices[0].logprobs.token_logprobs


def test_developer_is_system_and_penalties_and_bias_steer_the_tokens(client, built):
    as_system, as_developer = (client.chat.completions.create(
        model="sft_model", temperature=0, max_tokens=20,
        messages=[{"role": role, "content": "你是乐于助人的助手。"}, {"role": "user", "content": PROMPTS[0]}])
        .choices[0].message.content for role in ("system", "developer"))
    assert as_system == as_developer and as_system
    # The fields reach the rows (test_continuous_batching holds the rows to OpenAI's definition). The
    # demo model's greedy choices are too sure for +2 to change more than a name here and there, but
    # -2, which OpenAI allows, makes the replies repeat themselves several times over.
    plain = {"model": "base_model", "max_tokens": 30, "temperature": 0, "logprobs": 0,
             "extra_body": {"repetition_penalty": 1.0, "ignore_eos": True}}
    repeats = [sum(max(collections.Counter(client.completions.create(**plain, prompt=prompt, **penalties)
                                           .choices[0].logprobs.tokens).values())
                   for prompt in ("，，，", "的的的", "。", "市市市"))
               for penalties in ({}, {"frequency_penalty": 2.0, "presence_penalty": 2.0},
                                 {"frequency_penalty": -2.0, "presence_penalty": -2.0})]
    assert repeats[1] <= repeats[0] and repeats[2] >= 2 * repeats[0]
    from transformers import AutoTokenizer
    [city] = AutoTokenizer.from_pretrained(built / "results" / "base_model").encode("市", add_special_tokens=False)
    biased = client.completions.create(model="base_model", prompt="安宁", max_tokens=3, temperature=0,
                                       logit_bias={str(city): 100}, extra_body={"repetition_penalty": 1.0})
    assert biased.choices[0].text == "市市市"


def test_lm_eval_scores_the_served_base_model_as_the_multiple_choice_stage_does(server, built):
    """docs/serving.md's lm-eval command (port aside) through local-completions: the demo set's letter
    prompt at 0 shots, question by question as the stage scores it."""
    [command] = [line.strip() for line in joined_docs_lines()
                 if line.strip().startswith("lm_eval --model local-completions ")]
    command = command.replace("http://127.0.0.1:8000", server)
    result = subprocess.run(shlex.split(command), cwd=built, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [scores] = sorted((built / "results" / "lm_eval" / "base_model").glob("results_*.json"))[-1:]
    lm_eval_correct = {task.removeprefix("zhwiki_demo_"): round(metrics["acc,none"] * 40)
                       for task, metrics in json.loads(scores.read_text())["results"].items()
                       if task.startswith("zhwiki_demo_")}
    stage = json.loads((built / "results" / "eval" / "base_model" / "mc-demo.json").read_text())
    [zero_shot] = [r for r in stage["results"] if r["shots"] == 0 and r["scoring"] == "letter"]
    stage_correct = {"people": zero_shot["subjects"]["人物"]["correct"],
                     "geography": zero_shot["subjects"]["地理"]["correct"]}
    assert lm_eval_correct.keys() == stage_correct.keys()
    assert sum(abs(lm_eval_correct[s] - stage_correct[s]) for s in stage_correct) <= 1, (lm_eval_correct,
                                                                                       stage_correct)


def joined_docs_lines():
    return (REPO / "docs/serving.md").read_text(encoding="utf-8").replace("\\\n", " ").splitlines()


GOOD = {"model": "sft_model", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}
BAD = [
    (b'{"model": "sft_model", "messages": [', 400, None),
    ({**GOOD, "model": "gpt-9"}, 404, "model"),
    ({**GOOD, "messages": []}, 400, "messages"),
    ({**GOOD, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ({**GOOD, "messages": [{"role": "user", "content": 42}]}, 400, "messages.0.content"),
    ({**GOOD, "messages": [{"role": "user", "content": "问"}] * 65}, 400, "messages"),
    ({**GOOD, "messages": [{"role": "user", "content": "长" * 16001}]}, 400, "messages"),
    ({**GOOD, "temperature": 2.5}, 400, "temperature"),
    ({**GOOD, "temperature": "hot"}, 400, "temperature"),
    ({**GOOD, "max_tokens": 201}, 400, "max_tokens"),
    ({**GOOD, "max_tokens": "4"}, 400, "max_tokens"),
    ({**GOOD, "top_p": 0}, 400, "top_p"),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({**GOOD, "n": 17}, 400, "n"),
    # Hostile: each once stopped the server, answered 500 or was silently ignored.
    ({**GOOD, "seed": 2**64}, 400, "seed"),
    ({**GOOD, "seed": -2**63 - 1}, 400, "seed"),
    (b'{"model": "sft_model", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "messages.0.content"),
    (b'{"model": "sft_model", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),
    ({**GOOD, "max_tokens": 10**12}, 400, "max_tokens"),
    ({**GOOD, "top_p": -0.5}, 400, "top_p"),
    ({**GOOD, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ({**GOOD, "messages": [{"role": "tool", "content": "1", "tool_call_id": "x"}]}, 400, "messages.0"),
    ({**GOOD, "messages": [{"role": "assistant", "content": None, "tool_calls": []}]}, 400, "messages.0"),
    ({**GOOD, "response_format": {"type": "json_object"}}, 400, "response_format.type"),
    ({**GOOD, "logit_bias": {"99999": 5}}, 400, "logit_bias"),
    ({**GOOD, "logit_bias": {str(token): 1 for token in range(301)}}, 400, "logit_bias"),
    ({**GOOD, "top_logprobs": 2}, 400, "top_logprobs"),
    ({**GOOD, "best_of": 2}, 400, "best_of"),
]
# A value of the wrong type in every field a chat request takes.
WRONG_TYPES = {"model": 1, "messages": "你好", "max_tokens": "4", "max_completion_tokens": 4.0, "temperature": "0",
               "top_p": [1], "repetition_penalty": "1", "presence_penalty": {}, "frequency_penalty": "0",
               "logit_bias": [1], "stop": 5, "seed": 1.5, "n": True, "stream": "yes", "stream_options": 1,
               "ignore_eos": 1, "user": 5, "logprobs": 1, "top_logprobs": "2", "response_format": "text"}
BAD += [({**GOOD, field: value}, 400, field) for field, value in WRONG_TYPES.items()]


@pytest.mark.parametrize("body,status,param", BAD, ids=[str(b[2]) + str(n) for n, b in enumerate(BAD)])
def test_a_bad_request_gets_an_openai_error_and_the_server_goes_on(server, body, status, param):
    code, answer = post(server, "/v1/chat/completions", body)
    assert code == status, answer
    assert answer["error"]["param"] == param and answer["error"]["message"]
    assert post(server, "/v1/chat/completions", GOOD)[0] == 200
    assert health(server)["status"] == "ok"


def test_sixteen_concurrent_streams_each_equal_the_answer_alone(client):
    prompts = [f"{PROMPTS[n % 4]}{'请' * (n // 4)}" for n in range(16)]
    alone = [ask(client, p, max_tokens=32).choices[0].message.content for p in prompts]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda p: streamed(client, p, max_tokens=32)[0], prompts))
    assert together == alone
    assert time.monotonic() - started < 120


def raw_stream(url, body):
    """A streaming POST on a bare socket, so the test can hang up mid-stream."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def wait_idle(url, seconds=30):
    deadline = time.monotonic() + seconds
    while (state := health(url))["busy"] or state["queued"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return state


def test_a_client_that_hangs_up_stops_its_generation_quietly(server, server_log):
    before = wait_idle(server)
    sock = raw_stream(server, {"model": "sft_model", "prompt": "安宁市", "max_tokens": 200, "stream": True,
                               "ignore_eos": True})
    received = b""
    while received.count(b"data:") < 4:
        received += sock.recv(4096)
    sock.close()
    after = wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["completion_tokens"] - before["completion_tokens"] < 100
    assert post(server, "/v1/chat/completions", GOOD)[0] == 200 and health(server)["status"] == "ok"
    log = server_log.read_text()
    assert "the client hung up; its generation stopped" in log
    assert "Traceback" not in log and "CancelledError" not in log


def test_api_key_cors_and_the_bounded_queue(sft_model):
    front = "http://front.example"
    with serving(sft_model, "--api-key", "s3cret", "--max-queue", "1", "--max-batch", "1",
                 "--cors-origin", front) as url:
        assert post(url, "/v1/chat/completions", GOOD)[0] == 401
        key = {"Authorization": "Bearer s3cret"}
        assert post(url, "/v1/chat/completions", GOOD, key)[0] == 200
        # While one generates (the batch holds one), of two more at once one waits and the other
        # finds the queue full, and is told when to try again.
        long = {"model": "sft_model", "prompt": "安宁市", "max_tokens": 240, "ignore_eos": True}
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, url, "/v1/completions", long, key)
            while not health(url)["busy"]:
                time.sleep(0.01)
            results = list(pool.map(lambda _: post(url, "/v1/completions", long, key, with_headers=True), range(2)))
        assert first.result()[0] == 200 and sorted(status for status, _, _ in results) == [200, 503]
        [(_, _, refused)] = [r for r in results if r[0] == 503]
        assert refused["Retry-After"] == "1"
        preflight = urllib.request.Request(f"{url}/v1/chat/completions", method="OPTIONS", headers={
            "Origin": front, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        with urllib.request.urlopen(preflight, timeout=10) as response:
            assert response.headers["Access-Control-Allow-Origin"] == front


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not chromium() and not os.environ.get("REQUIRE_BROWSER"),
                    reason="no Chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_the_chat_page_streams_answers_keeps_the_conversation_and_trims_it_to_the_context(server, sft_model,
                                                                                          tmp_path):
    from playwright.sync_api import sync_playwright
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 640}, locale="zh-CN")
        page.on("request", lambda r: r.method == "POST" and requests.append(json.loads(r.post_data)))
        page.goto(server + "/")
        page.wait_for_selector("#model option[value=sft_model]", state="attached")
        intro = page.wait_for_selector(".intro").inner_text()
        assert intro.startswith("模型：sft_model（上下文 256 个词元）。它只知道训练语料里的内容。")
        assert page.locator(".intro button").all_inner_texts() == answered_questions(sft_model)
        for turn, question in enumerate(PROMPTS[:2], start=1):
            say(page, question, turn)
        answers = page.locator(".assistant").all_inner_texts()
        assert all(answers) and len(answers) == 2
        assert [m["role"] for m in requests[1]["messages"]] == ["user", "assistant", "user"]
        assert requests[1]["messages"][1]["content"] == answers[0]
        # 200 new tokens leave no room in the model's 256 for the first turns: they are trimmed.
        page.fill("#max_tokens", "200")
        say(page, PROMPTS[2], 3)
        trimmed = page.locator(".msg.trimmed").count()
        assert trimmed in (2, 4) and len(requests[-1]["messages"]) == 5 - trimmed
        assert f"最早的 {trimmed // 2} 轮不再发给模型" in page.locator(".note:not(.intro)").first.inner_text()
        page.screenshot(path=os.environ.get("CHAT_PAGE_SCREENSHOT", str(tmp_path / "chat_page.png")))
        page.fill("#max_tokens", "201")  # over the server's --max-tokens 200
        page.fill("#input", PROMPTS[3])
        page.keyboard.press("Enter")
        assert "超出了服务器允许的范围" in page.wait_for_selector(".error").inner_text()
        english = browser.new_page(locale="en-US")
        english.goto(server + "/")
        english.wait_for_selector("#model option[value=sft_model]", state="attached")
        assert english.locator("#send").inner_text() == "Send"
        assert english.wait_for_selector(".intro").inner_text().startswith("Model: sft_model (context 256 tokens).")
        english.locator(".intro button").first.click()  # an example question asks itself
        english.wait_for_function("document.querySelectorAll('.assistant[data-done]').length === 1", timeout=60000)
        assert english.locator(".user").all_inner_texts() == answered_questions(sft_model)[:1]
        base = browser.new_page(locale="en-US")
        base.goto(server + "/")
        base.wait_for_selector("#model option[value=base_model]", state="attached")
        base.select_option("#model", "base_model")
        assert "This is a base model" in base.wait_for_selector(".intro:has-text('base_model')").inner_text()
        browser.close()


def say(page, question, turn):
    """Ask on the page and wait for its turn-th answer to finish."""
    page.fill("#input", question)
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelectorAll('.assistant[data-done]').length === {turn}", timeout=60000)
