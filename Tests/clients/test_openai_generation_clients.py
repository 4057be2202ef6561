"""Apus's OpenAI text-generation routes driven by the openai client from PyPI (version: requirements.txt).

What the client does (read from its code, and checked by the test marked "route"):
- client.completions.create: `POST {base_url}/completions` with the arguments given as JSON (nothing
  it was not given); with stream=True it reads SSE `data:` lines, stops at `data: [DONE]`, and raises
  APIError when a chunk is `{"error": ...}`.
- client.chat.completions.create: `POST {base_url}/chat/completions`, the same way.
- Errors map by HTTP status (400 BadRequestError, 404 NotFoundError, ...), with the body's `error`
  object as `.body` and its code/type/param copied.

The answers are compared with Apus's TGI route `/generate` on the same prompt, greedy (temperature 0),
as the independent reference. Kept short: a few tokens per request, as generation on a busy CPU is a
few dozen tokens per second.
"""

import asyncio
import json

import openai
import pytest
import requests

from conftest import OPENAI_TIMEOUT, openai_client

MODEL = "smollm2-135m-instruct"
BYTE_MODEL = "byte-softmax-lm"  # served when `make models` installed it (the server skips it otherwise)
PROMPT = "The capital of France is"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# The chat above as SmolLM2's chat template (GGUF tokenizer.chat_template) renders it, by hand.
RENDERED_QUESTION = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)
N = 8


def generate(url, inputs, max_new_tokens, model=None) -> requests.Response:
    """TGI's route, greedy: the reference the OpenAI answers are compared with."""
    body = {"inputs": inputs, "parameters": {"max_new_tokens": max_new_tokens, "details": True}}
    if model:
        body["model"] = model
    response = requests.post(f"{url}/generate", json=body, timeout=OPENAI_TIMEOUT)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def reference(url) -> dict:
    return generate(url, PROMPT, N).json()


@pytest.fixture(scope="module")
def served_models(url) -> set:
    return {m["id"] for m in requests.get(f"{url}/v1/models", timeout=OPENAI_TIMEOUT).json()["data"]}


# --- completions -------------------------------------------------------------------------------------


def test_completions(oai, reference):
    r = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=N, temperature=0)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.model == MODEL
    assert isinstance(r.created, int) and r.created > 0
    (choice,) = r.choices
    assert choice.index == 0
    assert choice.text == reference["generated_text"]
    assert choice.finish_reason == "length"
    assert choice.logprobs is None
    assert r.usage.prompt_tokens == 5  # The capital of France is
    assert r.usage.completion_tokens == reference["details"]["generated_tokens"] == N
    assert r.usage.total_tokens == 5 + N


def test_completions_stream(oai, reference):
    stream = oai.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=N, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    *texts, finish, usage = chunks
    assert texts, "no text chunk"
    assert all(c.object == "text_completion" and c.usage is None for c in texts + [finish])
    assert all(c.choices[0].finish_reason is None for c in texts)
    assert finish.choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in texts + [finish]) == reference["generated_text"]
    assert usage.choices == []
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens, usage.usage.total_tokens) == (5, N, 5 + N)


def test_completions_stop_is_cut_out(oai, url):
    full = generate(url, PROMPT, 16).json()["generated_text"]
    stop = full[4:9]  # from the middle of the greedy text, spanning a token boundary
    r = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[: full.index(stop)]


def test_completions_seed(oai):
    a, b = (oai.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=N, seed=5) for _ in range(2))
    assert a.choices[0].text == b.choices[0].text


def test_completions_byte_model(oai, url, served_models):
    if BYTE_MODEL not in served_models:
        pytest.skip(f"{BYTE_MODEL} is not served (run `make models`)")
    expected = generate(url, "The ", 20, model=BYTE_MODEL).json()["generated_text"]
    r = oai.completions.create(model=BYTE_MODEL, prompt="The ", max_tokens=20, temperature=0)
    assert r.model == BYTE_MODEL
    assert r.choices[0].text == expected
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 20)  # one token per byte


# --- chat completions --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_reference(url) -> requests.Response:
    return generate(url, RENDERED_QUESTION, 40)


def test_chat(oai, chat_reference):
    r = oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    (choice,) = r.choices
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.message.content == chat_reference.json()["generated_text"]
    assert choice.finish_reason == "stop"  # at <|im_end|>
    assert r.usage.prompt_tokens == int(chat_reference.headers["x-prompt-tokens"])
    assert r.usage.completion_tokens == int(chat_reference.headers["x-generated-tokens"])


def test_chat_stream(oai, chat_reference):
    chunks = list(
        oai.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=40, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in middle)
    content = "".join(c.choices[0].delta.content for c in middle)
    assert "Paris" in content
    assert content == chat_reference.json()["generated_text"]
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage.prompt_tokens == int(chat_reference.headers["x-prompt-tokens"])


def test_chat_async_stream(url, chat_reference):
    async def run():
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=OPENAI_TIMEOUT) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=QUESTION, max_completion_tokens=40, temperature=0, stream=True
            )
            return [c async for c in stream]

    chunks = asyncio.run(run())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == chat_reference.json()["generated_text"]


def test_chat_without_template_is_400(oai, served_models):
    if BYTE_MODEL not in served_models:
        pytest.skip(f"{BYTE_MODEL} is not served (run `make models`)")
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=BYTE_MODEL, messages=QUESTION, max_tokens=4)
    assert "chat template" in info.value.message


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_unknown_model_is_not_found(oai, route):
    with pytest.raises(openai.NotFoundError) as info:
        if route == "completions":
            oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT, max_tokens=2)
        else:
            oai.chat.completions.create(model="gpt-3.5-turbo-instruct", messages=QUESTION, max_tokens=2)
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.type == "invalid_request_error"
    assert "gpt-3.5-turbo-instruct" in info.value.message


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_n_2_is_bad_request(oai, route):
    with pytest.raises(openai.BadRequestError) as info:
        if route == "completions":
            oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, n=2)
        else:
            oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, n=2)
    assert info.value.status_code == 400
    assert info.value.param == "n"
    assert info.value.type == "invalid_request_error"


def test_context_overflow_is_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as info:
        oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=100_000)
    assert "maximum context length" in info.value.message


def test_route_openai_generation(url):
    """route: the client posts to `{base_url}/completions` and `{base_url}/chat/completions` with
    exactly the arguments given."""
    seen = []
    client = openai_client(url, http_client=openai.DefaultHttpxClient(event_hooks={"request": [seen.append]}))
    try:
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, temperature=0)
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1, stream=True).close()
    finally:
        client.close()
    assert [(r.method, str(r.url)) for r in seen] == [
        ("POST", f"{url}/v1/completions"),
        ("POST", f"{url}/v1/chat/completions"),
    ]
    assert [json.loads(r.content) for r in seen] == [
        {"model": MODEL, "prompt": PROMPT, "max_tokens": 1, "temperature": 0},
        {"model": MODEL, "messages": QUESTION, "max_tokens": 1, "stream": True},
    ]
