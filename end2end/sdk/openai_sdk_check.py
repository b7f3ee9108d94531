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

def refused(key, error, status, word, **extra):
    """A request with `key` fails with the SDK's `error` class, `status`, and `word` in its message."""
    try:
        client(os.environ[key]).chat.completions.create(
            messages=[{"role": "user", "content": "x"}], **{"model": "mock/echo", **extra}
        )
    except error as e:
        assert e.status_code == status and word in str(e), e
        return e
    sys.exit(f"{key}: the request was served")


print("revoked: AuthenticationError", refused("KEY_REVOKED", openai.AuthenticationError, 401, "revoked").status_code)
e = refused("KEY_BROKE", openai.APIStatusError, 402, "budget", model="mock/priced", max_tokens=100)
print("over budget: APIStatusError", e.status_code)
e = refused("KEY_LIMITED", openai.RateLimitError, 429, "")
print("rate limited: RateLimitError", e.status_code, "retry-after", e.response.headers.get("retry-after"))

print("all SDK checks passed")
