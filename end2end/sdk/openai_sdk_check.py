"""The official OpenAI Python SDK, unchanged, against Tollgate's /v1.

Run by server/tests/api/sdk.rs with the gateway's URL and four keys in the
environment: a working one, a revoked one, one over its budget and one
with RPM 1 that has used its request. Exits non-zero on the first failure.
"""

import os
import sys

import openai
from openai import OpenAI

base = os.environ["TOLLGATE_URL"] + "/v1"


def client(key: str) -> OpenAI:
    # No retries: a refusal must surface as the SDK's error at once.
    return OpenAI(base_url=base, api_key=key, max_retries=0)


ok = client(os.environ["KEY_OK"])

chat = ok.chat.completions.create(
    model="mock/echo",
    messages=[{"role": "user", "content": "Hello from the SDK"}],
    max_tokens=32,
)
assert chat.choices[0].message.content == "Hello from the SDK", chat
assert chat.usage is not None and chat.usage.prompt_tokens > 0, chat.usage
print("chat:", chat.choices[0].message.content, chat.usage.total_tokens, "tokens")

pieces = []
usage = None
for chunk in ok.chat.completions.create(
    model="mock/echo",
    messages=[{"role": "user", "content": "stream me please"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage
assert "".join(pieces) == "stream me please", pieces
assert usage is not None and usage.completion_tokens > 0, usage
print("stream:", len(pieces), "chunks,", usage.total_tokens, "tokens")

emb = ok.embeddings.create(model="mock/embed", input=["one", "two"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) == 16, emb
print("embeddings:", len(emb.data), "vectors of", len(emb.data[0].embedding))

ids = sorted(m.id for m in ok.models.list())
assert "mock/echo" in ids and "mock/embed" in ids, ids
print("models:", ids)

try:
    client(os.environ["KEY_REVOKED"]).chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "x"}]
    )
    sys.exit("a revoked key was served")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and "revoked" in str(e), e
    print("revoked: AuthenticationError", e.status_code)

try:
    client(os.environ["KEY_BROKE"]).chat.completions.create(
        model="mock/priced", messages=[{"role": "user", "content": "x"}], max_tokens=100
    )
    sys.exit("an over-budget key was served")
except openai.APIStatusError as e:
    assert e.status_code == 402 and "budget" in str(e), e
    print("over budget: APIStatusError", e.status_code)

try:
    client(os.environ["KEY_LIMITED"]).chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "x"}]
    )
    sys.exit("a rate-limited key was served")
except openai.RateLimitError as e:
    assert e.status_code == 429, e
    print("rate limited: RateLimitError", e.status_code, "retry-after", e.response.headers.get("retry-after"))

print("all SDK checks passed")
