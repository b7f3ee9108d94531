"""Prompt management through the official OpenAI Python SDK, unchanged:
`prompt_id` and `prompt_variables` sent in `extra_body`, as LiteLLM's users
send them. Run by server/tests/api/prompts.rs with the gateway's URL, a key
whose project may use the prompt, a key whose project may not, and the
answer `mock/echo` must give (the template's last user message, filled).
Exits non-zero on the first failure.
"""

import os

import openai
from openai import OpenAI

base = os.environ["TOLLGATE_URL"] + "/v1"
prompt_id = os.environ["PROMPT_ID"]
expect = os.environ["EXPECT"]


def client(key: str) -> OpenAI:
    return OpenAI(base_url=base, api_key=key, max_retries=0)


ok = client(os.environ["KEY_OK"])
variables = {"company": "Acme", "customer": "Ada", "ticket": "the printer is on fire"}

chat = ok.chat.completions.create(
    model="mock/echo",
    messages=[],
    extra_body={"prompt_id": prompt_id, "prompt_variables": variables},
)
assert chat.choices[0].message.content == expect, (chat.choices[0].message.content, expect)
print("rendered:", chat.choices[0].message.content)

# The request's own messages come after the template's: echo repeats the
# last user message, now the request's.
chat = ok.chat.completions.create(
    model="mock/echo",
    messages=[{"role": "user", "content": "and one more thing"}],
    extra_body={"prompt_id": prompt_id, "prompt_variables": variables},
)
assert chat.choices[0].message.content == "and one more thing", chat

try:
    ok.chat.completions.create(
        model="mock/echo",
        messages=[],
        extra_body={"prompt_id": prompt_id, "prompt_variables": {"company": "Acme", "customer": "Ada"}},
    )
    raise SystemExit("a missing variable was served")
except openai.BadRequestError as e:
    assert e.status_code == 400, e
    assert "'ticket'" in e.message, e.message
    assert e.body["param"] == "prompt_variables", e.body
    print("missing variable:", e.message)

try:
    client(os.environ["KEY_OTHER_PROJECT"]).chat.completions.create(
        model="mock/echo",
        messages=[],
        extra_body={"prompt_id": prompt_id, "prompt_variables": variables},
    )
    raise SystemExit("a project that may not use the prompt was served")
except openai.PermissionDeniedError as e:
    assert e.status_code == 403, e
    assert e.body["code"] == "prompt_not_allowed", e.body
    print("other project:", e.message)

print("all prompt checks passed")
