"""Apus's embedding routes driven by the real client libraries from PyPI (versions: requirements.txt).

Which route each client uses (read from the clients' code, and checked by the tests marked
"route"):
- huggingface_hub.InferenceClient(model=URL).feature_extraction: a model that starts with
  http(s):// selects the "hf-inference" provider with no hub look-up, and the request goes to the
  URL as given, i.e. `POST /` (not `/embed`), with TEI's body: `{"inputs": str | [str]}` plus the
  parameters at the top level (not under "parameters"), None values dropped: `normalize`,
  `truncate`, `truncation_direction` (lower-case "left" / "right" in huggingface_hub 2.x, where TEI's
  docs say "Left" / "Right"), `prompt_name`, `dimensions`, `encoding_format`. It turns the JSON
  answer into a float32 numpy array as it is, so one string gives shape (1, 384). Errors are
  HfHubHTTPError (an httpx2.HTTPError) carrying the response; no mapping by error_type.
- openai.OpenAI(base_url=URL + "/v1").embeddings.create: `POST /v1/embeddings` with
  `{"model", "input", "encoding_format": "base64"}` -- when the caller gives no encoding_format the
  client asks for base64 itself and decodes it (float32 little-endian, with numpy when installed)
  back into a list of floats; an explicit "float" is sent and the answer left alone. Headers:
  `Authorization: Bearer <api_key>`, `User-Agent: OpenAI/Python <version>` and `X-Stainless-*`.
  Errors map by HTTP status (400 BadRequestError, 404 NotFoundError, 422 UnprocessableEntityError,
  others APIStatusError), with the body's `error` object as `.body` and its code/type/param copied.
- openai.OpenAI(...).models.list: `GET /v1/models`, read as a page of `data`.

The OpenAI clients get max_retries=0 (its default retries 408/409/429/5xx twice, with back-off) and a
timeout, and no OPENAI_* variable from the environment.
"""

import asyncio
import base64
import json

import numpy as np
import pytest
import requests

import openai
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from conftest import openai_client

MODEL = "all-minilm-l6-v2"
GENERATION_MODEL = "smollm2-135m-instruct"
DIMS = 384
MAX_TOKENS = 256
TIMEOUT = 120  # seconds; a busy 2-core machine

FOOD = "A man is eating food."  # [CLS] a man is eating food . [SEP]: 8 tokens
BREAD = "A man is eating a piece of bread."  # 11 tokens
BABY = "The girl is carrying a baby."  # 9 tokens
TOKENS = {FOOD: 8, BREAD: 11, BABY: 9}
HELLO_IDS = [101, 7592, 102]  # [CLS] hello [SEP]

# Well over 256 tokens, with a different start and end so left and right truncation differ.
LONG = "The weather was cold and grey that morning. " * 20 + "Then the sun came out over the hills. " * 20


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def cosine(a, b) -> float:
    return float(np.dot(unit(a), unit(b)))


def post_embed(url, body) -> list:
    """TEI's route directly, as the reference the clients' answers are compared with."""
    response = requests.post(f"{url}/embed", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def hub(url):
    # The URL as `model`: no model id to resolve, so no hub request.
    return InferenceClient(model=url, timeout=TIMEOUT)


# --- huggingface_hub.InferenceClient.feature_extraction ----------------------------------------------


def test_hub_feature_extraction(hub, url):
    vector = hub.feature_extraction(FOOD)
    assert isinstance(vector, np.ndarray) and vector.dtype == np.float32
    assert vector.shape == (1, DIMS)  # TEI answers [[...]] even for one string; the client keeps it
    assert np.linalg.norm(vector[0]) == pytest.approx(1.0, abs=1e-5)
    # Same text, same request shape: the same numbers as /embed itself.
    (reference,) = post_embed(url, {"inputs": FOOD})
    assert np.array_equal(vector[0], np.asarray(reference, dtype=np.float32))


def test_hub_feature_extraction_batch(hub, url):
    sentences = [FOOD, BREAD, BABY]
    vectors = hub.feature_extraction(sentences)
    assert vectors.shape == (3, DIMS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reference = np.asarray(post_embed(url, {"inputs": sentences}), dtype=np.float32)
    assert np.array_equal(vectors, reference)
    # Batched or one at a time: the same embedding (to float tolerance; padding changes the sums).
    for sentence, vector in zip(sentences, vectors):
        assert np.allclose(hub.feature_extraction(sentence)[0], vector, atol=1e-6)


def test_hub_feature_extraction_embed_url(url, hub):
    """The route as TEI documents it, `InferenceClient(model=URL + "/embed")`, gives the same answer."""
    client = InferenceClient(model=f"{url}/embed", timeout=TIMEOUT)
    assert np.array_equal(client.feature_extraction(FOOD), hub.feature_extraction(FOOD))


def test_hub_normalize_false(hub):
    raw = hub.feature_extraction(FOOD, normalize=False)[0]
    normalized = hub.feature_extraction(FOOD)[0]
    norm = float(np.linalg.norm(raw))
    assert abs(norm - 1.0) > 0.1, f"normalize=False still gave a unit vector (norm {norm})"
    assert np.allclose(unit(raw), normalized, atol=1e-5)


def test_hub_too_long_is_422(hub):
    with pytest.raises(HfHubHTTPError) as info:
        hub.feature_extraction(LONG)
    assert info.value.response.status_code == 422
    assert "256" in info.value.response.json()["error"]
    assert info.value.response.json()["error_type"] == "validation"


def test_hub_truncate(hub):
    vector = hub.feature_extraction(LONG, truncate=True)
    assert vector.shape == (1, DIMS)
    assert np.linalg.norm(vector[0]) == pytest.approx(1.0, abs=1e-5)
    right = hub.feature_extraction(LONG, truncate=True, truncation_direction="right")
    left = hub.feature_extraction(LONG, truncate=True, truncation_direction="left")
    assert np.array_equal(vector, right)  # Right is the default
    assert not np.allclose(left, right, atol=1e-3)
    # Left keeps the end of the text (the sun), right its start (the weather).
    assert cosine(left[0], hub.feature_extraction("Then the sun came out over the hills.")[0]) > cosine(
        right[0], hub.feature_extraction("Then the sun came out over the hills.")[0]
    )


def test_hub_async(url, hub):
    async def run():
        client = AsyncInferenceClient(model=url, timeout=TIMEOUT)
        try:
            return await client.feature_extraction([FOOD, BABY])
        finally:
            await client.close()

    vectors = asyncio.run(run())
    assert vectors.shape == (2, DIMS)
    assert np.array_equal(vectors, hub.feature_extraction([FOOD, BABY]))


def test_route_hub_posts_to_base_url(hub, url, monkeypatch):
    """route: feature_extraction posts TEI's body to the URL itself (`POST /`), parameters at the top."""
    seen = []
    real_inner_post = InferenceClient._inner_post

    def inner_post(self, request_parameters, **kw):
        seen.append(request_parameters)
        return real_inner_post(self, request_parameters, **kw)

    monkeypatch.setattr(InferenceClient, "_inner_post", inner_post)
    hub.feature_extraction(FOOD)
    hub.feature_extraction([FOOD], normalize=False, truncate=True, truncation_direction="left")
    assert [p.url for p in seen] == [url, url]
    assert seen[0].json == {"inputs": FOOD}
    assert seen[1].json == {"inputs": [FOOD], "normalize": False, "truncate": True, "truncation_direction": "left"}


# --- openai.OpenAI ------------------------------------------------------------------------------------


def test_openai_embeddings_base64_default(oai, url):
    sentences = [FOOD, BREAD, BABY]
    r = oai.embeddings.create(model=MODEL, input=sentences)
    assert r.object == "list" and r.model == MODEL
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(d.object == "embedding" for d in r.data)
    # Decoded by the client from base64 float32.
    assert all(isinstance(d.embedding, list) and len(d.embedding) == DIMS for d in r.data)
    reference = post_embed(url, {"inputs": sentences})
    for d, ref in zip(r.data, reference):
        assert np.allclose(d.embedding, ref, atol=1e-6)
        assert np.linalg.norm(d.embedding) == pytest.approx(1.0, abs=1e-5)
    assert r.usage.prompt_tokens == sum(TOKENS[s] for s in sentences) == 28
    assert r.usage.total_tokens == r.usage.prompt_tokens


def test_openai_embeddings_float(oai, url):
    r = oai.embeddings.create(model=MODEL, input=[FOOD, BABY], encoding_format="float")
    assert all(isinstance(x, float) for d in r.data for x in d.embedding)
    # The same batch through /embed: the same numbers, printed the same way.
    assert [d.embedding for d in r.data] == post_embed(url, {"inputs": [FOOD, BABY]})
    base64_answer = oai.embeddings.create(model=MODEL, input=[FOOD, BABY])
    for a, b in zip(r.data, base64_answer.data):
        assert np.allclose(a.embedding, b.embedding, atol=1e-6)


def test_openai_embeddings_raw_base64(oai):
    """Asked for base64 explicitly, the client leaves the string alone: little-endian float32."""
    r = oai.embeddings.create(model=MODEL, input=FOOD, encoding_format="base64")
    (d,) = r.data
    assert isinstance(d.embedding, str)
    vector = np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
    assert vector.shape == (DIMS,)
    floats = oai.embeddings.create(model=MODEL, input=FOOD, encoding_format="float").data[0].embedding
    assert np.array_equal(vector, np.asarray(floats, dtype=np.float32))


def test_openai_usage_is_the_sum_of_token_counts(oai):
    sentences = [FOOD, BREAD, BABY]
    singles = [oai.embeddings.create(model=MODEL, input=s).usage.prompt_tokens for s in sentences]
    assert singles == [TOKENS[s] for s in sentences]
    batch = oai.embeddings.create(model=MODEL, input=sentences).usage
    assert batch.prompt_tokens == sum(singles) > 0


def test_openai_token_ids(oai):
    r = oai.embeddings.create(model=MODEL, input=[HELLO_IDS])
    (d,) = r.data
    assert len(d.embedding) == DIMS
    assert r.usage.prompt_tokens == 3
    # The same token ids as the text, so the same embedding.
    text = oai.embeddings.create(model=MODEL, input="hello").data[0].embedding
    assert np.allclose(d.embedding, text, atol=1e-6)
    # A flat list of ids is one input too.
    flat = oai.embeddings.create(model=MODEL, input=HELLO_IDS)
    assert len(flat.data) == 1 and np.allclose(flat.data[0].embedding, d.embedding, atol=1e-6)


def test_openai_unknown_model(oai):
    with pytest.raises(openai.NotFoundError) as info:
        oai.embeddings.create(model="text-embedding-3-small", input=FOOD)
    assert info.value.status_code == 404
    assert "text-embedding-3-small" in info.value.message


def test_openai_generation_model_is_not_an_embedding_model(oai):
    with pytest.raises(openai.APIStatusError) as info:
        oai.embeddings.create(model=GENERATION_MODEL, input=FOOD)
    assert info.value.status_code in (400, 404)


def test_openai_error_code_and_type_as_openai(oai):
    with pytest.raises(openai.NotFoundError) as info:
        oai.embeddings.create(model="text-embedding-3-small", input=FOOD)
    assert info.value.code == "model_not_found"
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize("value", [[], "", [FOOD, ""]], ids=["no-input", "empty-string", "one-empty"])
def test_openai_empty_input(oai, value):
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model=MODEL, input=value)
    assert info.value.status_code == 400
    assert set(info.value.body) >= {"message", "type", "param", "code"}


def test_openai_too_long(oai):
    # OpenAI answers an over-long input with 400 (invalid_request_error), and so does Apus on /v1.
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model=MODEL, input=LONG)
    assert info.value.status_code == 400
    assert info.value.type == "invalid_request_error"


def test_openai_too_many_inputs(oai):
    with pytest.raises(openai.APIStatusError) as info:
        oai.embeddings.create(model=MODEL, input=[FOOD] * 33)
    assert info.value.status_code == 413
    assert "32" in info.value.message


def test_openai_models_list(oai):
    models = list(oai.models.list())
    ids = [m.id for m in models]
    # The byte-level models trained here are served too when `make models` installed them.
    trained = {"byte-softmax-lm", "byte-sigmoid-lm", "byte-aaren-lm"}
    assert set(ids) - trained == {MODEL, GENERATION_MODEL}
    assert ids[0] == GENERATION_MODEL  # the default generation model first
    for m in models:
        assert m.object == "model"
        assert isinstance(m.created, int) and m.created > 0
        assert isinstance(m.owned_by, str) and m.owned_by
    kinds = {m.id: getattr(m, "kind", None) for m in models}  # Apus's extra field, kept by the client
    assert kinds == {MODEL: "embedding", GENERATION_MODEL: "generation"} | {i: "generation" for i in set(ids) & trained}


def test_openai_async(url):
    async def run():
        async with openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
        ) as client:
            return await client.embeddings.create(model=MODEL, input=[FOOD, BABY])

    r = asyncio.run(run())
    reference = post_embed(url, {"inputs": [FOOD, BABY]})
    assert len(r.data) == 2
    for d, ref in zip(r.data, reference):
        assert np.allclose(d.embedding, ref, atol=1e-6)


def test_route_openai(url, monkeypatch):
    """route: the openai client posts to `{base_url}/embeddings`, asks for base64 unless told,
    and sends its key as a bearer token; `models.list` is `GET /v1/models`."""
    requests_seen = []

    def on_request(request):
        requests_seen.append(request)

    client = openai_client(url, http_client=openai.DefaultHttpxClient(event_hooks={"request": [on_request]}))
    try:
        client.embeddings.create(model=MODEL, input=[FOOD])
        client.embeddings.create(model=MODEL, input=[FOOD], encoding_format="float")
        client.models.list()
    finally:
        client.close()
    assert [(r.method, str(r.url)) for r in requests_seen] == [
        ("POST", f"{url}/v1/embeddings"),
        ("POST", f"{url}/v1/embeddings"),
        ("GET", f"{url}/v1/models"),
    ]
    bodies = [json.loads(r.content) for r in requests_seen[:2]]
    assert bodies == [
        {"model": MODEL, "input": [FOOD], "encoding_format": "base64"},
        {"model": MODEL, "input": [FOOD], "encoding_format": "float"},
    ]
    for r in requests_seen:
        assert r.headers["authorization"] == "Bearer unused"
        assert r.headers["user-agent"].startswith("OpenAI/Python")
        assert r.headers.get("x-stainless-retry-count") == "0"


# --- semantics ----------------------------------------------------------------------------------------


def test_semantic_similarity(oai, hub):
    food, bread, baby = (d.embedding for d in oai.embeddings.create(model=MODEL, input=[FOOD, BREAD, BABY]).data)
    assert cosine(food, bread) > cosine(food, baby)
    assert cosine(food, bread) > 0.5 > cosine(food, baby)
    vectors = hub.feature_extraction([FOOD, BREAD, BABY])
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
