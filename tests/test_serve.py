"""The OpenAI-compatible server on the demo's SFT model: the official client, limits, load, the page."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress

import openai
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
PROMPTS = ["安宁市位于哪个省？", "请介绍一下你自己。", "哪条河流经青松市？", "王勇研究什么？"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(model, *options):
    """A server on a free port of 127.0.0.1; yields its base URL once /health answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "workflow_scripts.serve", str(model), "--port", str(port),
                                "--threads", "2", *options], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
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


def post(url, path, body, headers=None):
    """(status, parsed JSON) of a POST; `body` bytes are sent as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


@pytest.fixture(scope="module")
def sft_model(built):
    return built / "results" / "sft_model"


@pytest.fixture(scope="module")
def server(sft_model):
    with serving(sft_model, "--max-queue", "16", "--max-tokens", "200") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def terminal_answer(model, prompt):
    result = subprocess.run([sys.executable, "-m", "workflow_scripts.chat", str(model), "--prompt", prompt,
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


def test_models_completions_and_the_page(client, server):
    assert [m.id for m in client.models.list().data] == ["sft_model"]
    completion = client.completions.create(model="sft_model", prompt="安宁市", max_tokens=7, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 7 and completion.choices[0].finish_reason == "length"
    with urllib.request.urlopen(server + "/", timeout=10) as page:
        html = page.read().decode()
    assert "/v1/chat/completions" in html and "http" not in html.replace("http://", "").split("<script>")[0]


GOOD = {"model": "sft_model", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}
BAD = [
    (b'{"model": "sft_model", "messages": [', 400, None),
    ({**GOOD, "model": "gpt-9"}, 404, "model"),
    ({**GOOD, "messages": []}, 400, "messages"),
    ({**GOOD, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ({**GOOD, "messages": [{"role": "user", "content": 42}]}, 400, "messages.0.content.str"),
    ({**GOOD, "messages": [{"role": "user", "content": "问"}] * 65}, 400, "messages"),
    ({**GOOD, "messages": [{"role": "user", "content": "长" * 16001}]}, 400, "messages"),
    ({**GOOD, "temperature": 2.5}, 400, "temperature"),
    ({**GOOD, "temperature": "hot"}, 400, "temperature"),
    ({**GOOD, "max_tokens": 201}, 400, "max_tokens"),
    ({**GOOD, "max_tokens": "4"}, 400, "max_tokens"),
    ({**GOOD, "top_p": 0}, 400, "top_p"),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({**GOOD, "n": 2}, 400, "n"),
]


@pytest.mark.parametrize("body,status,param", BAD, ids=[str(b[2]) + str(n) for n, b in enumerate(BAD)])
def test_a_bad_request_gets_an_openai_error_and_the_server_goes_on(server, body, status, param):
    code, answer = post(server, "/v1/chat/completions", body)
    assert code == status, answer
    assert answer["error"]["param"] == param and answer["error"]["message"]
    assert post(server, "/v1/chat/completions", GOOD)[0] == 200


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


def test_a_client_that_hangs_up_stops_its_generation(server):
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


def test_api_key_and_the_bounded_queue(sft_model):
    with serving(sft_model, "--api-key", "s3cret", "--max-queue", "1") as url:
        assert post(url, "/v1/chat/completions", GOOD)[0] == 401
        key = {"Authorization": "Bearer s3cret"}
        assert post(url, "/v1/chat/completions", GOOD, key)[0] == 200
        # While one generates, of two more at once one waits and the other finds the queue full.
        long = {"model": "sft_model", "prompt": "安宁市", "max_tokens": 240, "ignore_eos": True}
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, url, "/v1/completions", long, key)
            while not health(url)["busy"]:
                time.sleep(0.01)
            results = list(pool.map(lambda _: post(url, "/v1/completions", long, key)[0], range(2)))
        assert first.result()[0] == 200 and sorted(results) == [200, 503]


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not chromium() and not os.environ.get("REQUIRE_BROWSER"),
                    reason="no Chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_the_chat_page_streams_answers_and_keeps_the_conversation(server, tmp_path):
    from playwright.sync_api import sync_playwright
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 640})
        page.on("request", lambda r: r.method == "POST" and requests.append(json.loads(r.post_data)))
        page.goto(server + "/")
        page.wait_for_selector("#model option[value=sft_model]", state="attached")
        for turn, question in enumerate(PROMPTS[:2], start=1):
            page.fill("#input", question)
            page.keyboard.press("Enter")
            page.wait_for_selector(f".assistant >> nth={turn - 1}", state="attached")
            page.wait_for_function(f"document.querySelectorAll('.assistant[data-done]').length === {turn}",
                                   timeout=60000)
        answers = page.locator(".assistant").all_inner_texts()
        page.screenshot(path=os.environ.get("CHAT_PAGE_SCREENSHOT", str(tmp_path / "chat_page.png")))
        browser.close()
    assert all(answers) and len(answers) == 2
    assert [m["role"] for m in requests[1]["messages"]] == ["user", "assistant", "user"]
    assert requests[1]["messages"][1]["content"] == answers[0]
