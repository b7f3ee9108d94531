"""The official OpenAI and Anthropic Python SDKs, unchanged, against the agent
APIs of Tollgate's /v1: OpenAI's Responses API (`POST /v1/responses`) and
Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`).

    TOLLGATE_URL=http://127.0.0.1:3000 MODELS=mock/echo,chatonly/echo,claude/echo \\
    KEY_OK=... KEY_REVOKED=... KEY_NARROW=... python agents_api_check.py

Every model in MODELS answers the same way, whether Tollgate's mock serves it
or a fake upstream behind Tollgate does (end2end/sdk/fake_upstreams.py): it
echoes the last user message, calls an offered tool that the user's message
names with arguments made from its schema (a string is "mock"), and answers
`Tool result: <text>` to a tool's result. KEY_OK is allowed every model,
KEY_REVOKED is revoked and KEY_NARROW is not allowed the first model.

The OpenAI client uses TOLLGATE_URL + "/v1", the Anthropic one TOLLGATE_URL
(the SDK adds /v1/messages). CHECKS (default "responses,messages,refusals")
runs a subset, so the Messages checks can also be pointed straight at an
Anthropic-compatible server. Prints a line per check and exits non-zero on
the first failure.
"""

import json
import os
import sys
import traceback

import anthropic
import openai
from anthropic import Anthropic
from openai import OpenAI

BASE = os.environ["TOLLGATE_URL"].rstrip("/")
MODELS = [m.strip() for m in os.environ.get("MODELS", "mock/echo").split(",") if m.strip()]
CHECKS = {c.strip() for c in os.environ.get("CHECKS", "responses,messages,refusals").split(",")}
KEY_OK = os.environ["KEY_OK"]

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": WEATHER_SCHEMA,
    }
]
MESSAGES_TOOLS = [
    {"name": "get_weather", "description": "The weather in a city now.", "input_schema": WEATHER_SCHEMA}
]
ASK_TOOL = "Use get_weather for Paris"
RESULT = "sunny, 21C"


def fail(message):
    sys.exit(f"FAILED: {message}")


def openai_client(key):
    # No retries: a refusal must surface as the SDK's error at once.
    return OpenAI(base_url=BASE + "/v1", api_key=key, max_retries=0)


def anthropic_client(key, how="api_key"):
    """The Anthropic SDK with `key` sent the way `how` says.

    api_key: as the SDK does it for `api_key=` (anthropic 2.x sends it as
    `Authorization: Bearer`); auth_token: `auth_token=` (`Authorization:
    Bearer` too); x-api-key: only an `x-api-key` header, as older SDKs, curl
    examples and Tollgate's own Anthropic upstream send it."""
    if how == "auth_token":
        return Anthropic(base_url=BASE, auth_token=key, max_retries=0)
    if how == "x-api-key":
        return Anthropic(
            base_url=BASE,
            api_key=key,
            default_headers={"x-api-key": key, "Authorization": anthropic.omit},
            max_retries=0,
        )
    return Anthropic(base_url=BASE, api_key=key, max_retries=0)


def check(name, model, fn):
    """Runs fn(), which returns the figures to print; the first failure ends the run."""
    label = f"{name} {model}" if model else name
    try:
        figures = fn()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        traceback.print_exc()
        body = getattr(e, "body", None)
        fail(f"{label}: {type(e).__name__}: {e}" + (f"\n  body: {body!r}" if body is not None else ""))
    print(f"{label}: ok" + (f" ({figures})" if figures else ""), flush=True)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def tokens(usage, inp="input_tokens", out="output_tokens"):
    i, o = getattr(usage, inp, None), getattr(usage, out, None)
    expect(isinstance(i, int) and i > 0, f"usage.{inp} is {i!r}, expected > 0 (usage: {usage!r})")
    expect(isinstance(o, int) and o > 0, f"usage.{out} is {o!r}, expected > 0 (usage: {usage!r})")
    return f"{i} in, {o} out"


# ---------------------------------------------------------------------------
# The Responses API


def function_calls(response):
    return [item for item in response.output if item.type == "function_call"]


def expect_weather_call(response):
    calls = function_calls(response)
    expect(len(calls) == 1, f"expected one function_call in output, got {[i.type for i in response.output]}")
    call = calls[0]
    expect(call.name == "get_weather", f"function_call name {call.name!r}")
    args = json.loads(call.arguments)
    expect(args == {"city": "mock"}, f"function_call arguments {call.arguments!r}")
    expect(call.call_id, "function_call without call_id")
    return call


def expect_completed(resp, text=None):
    expect(resp.id, "response without id")
    expect(resp.object == "response", f"object {resp.object!r}")
    expect(resp.status == "completed", f"status {resp.status!r}")
    if text is not None:
        expect(resp.output_text == text, f"output_text {resp.output_text!r}, expected {text!r}")


def responses_checks(model):
    client = openai_client(KEY_OK)

    def plain():
        resp = client.responses.create(model=model, input="Hello responses", max_output_tokens=64)
        expect_completed(resp, "Hello responses")
        return tokens(resp.usage)

    def instructions_and_items():
        resp = client.responses.create(
            model=model,
            instructions="Answer in one line.",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Hello from an item list"}]}],
            max_output_tokens=64,
        )
        expect_completed(resp, "Hello from an item list")
        return tokens(resp.usage)

    def streamed_raw():
        text = "stream the responses please"
        events = list(client.responses.create(model=model, input=text, max_output_tokens=64, stream=True))
        kinds = [e.type for e in events]
        expect(kinds and kinds[0] == "response.created", f"first event {kinds[:1]}, expected response.created")
        expect(kinds[-1] == "response.completed", f"last event {kinds[-1:]}, expected response.completed")
        for needed in (
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ):
            expect(needed in kinds, f"no {needed} event in {kinds}")
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        expect("".join(deltas) == text, f"deltas {deltas!r} join to {''.join(deltas)!r}, expected {text!r}")
        done = next(e for e in events if e.type == "response.output_text.done")
        expect(done.text == text, f"output_text.done text {done.text!r}")
        seq = [e.sequence_number for e in events]
        expect(seq == sorted(set(seq)), f"sequence numbers not increasing: {seq}")
        completed = events[-1].response
        expect_completed(completed, text)
        expect(events[0].response.id == completed.id, "response.created and response.completed name other ids")
        return f"{len(deltas)} deltas, {len(events)} events, " + tokens(completed.usage)

    def streamed_helper():
        text = "the stream helper too"
        deltas = []
        with client.responses.stream(model=model, input=text, max_output_tokens=64) as s:
            for event in s:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            final = s.get_final_response()
        expect("".join(deltas) == text, f"deltas {deltas!r}")
        expect_completed(final, text)
        return f"{len(deltas)} deltas, " + tokens(final.usage)

    def tool_round_trip():
        first = client.responses.create(model=model, input=ASK_TOOL, tools=RESPONSES_TOOLS, max_output_tokens=64)
        expect(first.status == "completed", f"status {first.status!r}")
        call = expect_weather_call(first)
        figures = tokens(first.usage)
        # The output items go back as the SDK returned them, as the OpenAI docs show.
        second = client.responses.create(
            model=model,
            input=[
                {"role": "user", "content": ASK_TOOL},
                *first.output,
                {"type": "function_call_output", "call_id": call.call_id, "output": RESULT},
            ],
            tools=RESPONSES_TOOLS,
            max_output_tokens=64,
        )
        expect_completed(second)
        expect(RESULT in second.output_text, f"output_text {second.output_text!r} lacks {RESULT!r}")
        return f"call {call.call_id}; {figures}; then " + tokens(second.usage)

    def tool_round_trip_streamed():
        kinds = []
        arg_deltas = []
        with client.responses.stream(model=model, input=ASK_TOOL, tools=RESPONSES_TOOLS, max_output_tokens=64) as s:
            for event in s:
                kinds.append(event.type)
                if event.type == "response.function_call_arguments.delta":
                    arg_deltas.append(event.delta)
                if event.type == "response.function_call_arguments.done":
                    expect(json.loads(event.arguments) == {"city": "mock"}, f"arguments.done {event.arguments!r}")
            final = s.get_final_response()
        expect(arg_deltas, f"no response.function_call_arguments.delta in {kinds}")
        expect("response.function_call_arguments.done" in kinds, f"no response.function_call_arguments.done in {kinds}")
        expect(json.loads("".join(arg_deltas)) == {"city": "mock"}, f"argument deltas {arg_deltas!r}")
        expect(final.status == "completed", f"status {final.status!r}")
        call = expect_weather_call(final)
        figures = tokens(final.usage)
        deltas = []
        with client.responses.stream(
            model=model,
            input=[
                {"role": "user", "content": ASK_TOOL},
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                {"type": "function_call_output", "call_id": call.call_id, "output": RESULT},
            ],
            tools=RESPONSES_TOOLS,
            max_output_tokens=64,
        ) as s:
            for event in s:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            second = s.get_final_response()
        expect_completed(second)
        expect(RESULT in "".join(deltas), f"deltas {deltas!r} lack {RESULT!r}")
        expect(RESULT in second.output_text, f"output_text {second.output_text!r} lacks {RESULT!r}")
        return f"{len(arg_deltas)} argument deltas; {figures}; then " + tokens(second.usage)

    def json_schema_format():
        resp = client.responses.create(
            model=model,
            input="Reply as JSON please",
            text={
                "format": {
                    "type": "json_schema",
                    "name": "x",
                    "schema": {
                        "type": "object",
                        "properties": {"answer": {"type": "string"}},
                        "required": ["answer"],
                        "additionalProperties": False,
                    },
                    "strict": True,
                }
            },
            max_output_tokens=64,
        )
        expect(resp.status == "completed", f"status {resp.status!r}")
        return tokens(resp.usage)

    check("responses plain", model, plain)
    check("responses instructions + items", model, instructions_and_items)
    check("responses streamed", model, streamed_raw)
    check("responses stream helper", model, streamed_helper)
    check("responses function tool round trip", model, tool_round_trip)
    check("responses function tool round trip streamed", model, tool_round_trip_streamed)
    check("responses json_schema format", model, json_schema_format)


# ---------------------------------------------------------------------------
# The Messages API


def expect_message(msg, text=None, stop="end_turn"):
    expect(msg.type == "message", f"type {msg.type!r}")
    expect(msg.role == "assistant", f"role {msg.role!r}")
    expect(msg.id, "message without id")
    expect(msg.stop_reason == stop, f"stop_reason {msg.stop_reason!r}, expected {stop!r}")
    if text is not None:
        expect(msg.content and msg.content[0].type == "text", f"content {msg.content!r}")
        expect(msg.content[0].text == text, f"text {msg.content[0].text!r}, expected {text!r}")


def expect_tool_use(msg):
    expect_message(msg, stop="tool_use")
    uses = [b for b in msg.content if b.type == "tool_use"]
    expect(len(uses) == 1, f"expected one tool_use block, got {[b.type for b in msg.content]}")
    use = uses[0]
    expect(use.name == "get_weather", f"tool_use name {use.name!r}")
    expect(use.input == {"city": "mock"}, f"tool_use input {use.input!r}")
    expect(use.id, "tool_use without id")
    return use


def text_of(msg):
    return "".join(b.text for b in msg.content if b.type == "text")


def messages_checks(model, first):
    client = anthropic_client(KEY_OK)

    def plain():
        msg = client.messages.create(
            model=model, max_tokens=64, messages=[{"role": "user", "content": "Hello messages"}]
        )
        expect_message(msg, "Hello messages")
        return tokens(msg.usage)

    def system_and_blocks():
        msg = client.messages.create(
            model=model,
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hello from text blocks"}]}],
        )
        expect_message(msg, "Hello from text blocks")
        return tokens(msg.usage)

    def streamed():
        text = "stream the messages please"
        with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": text}]) as s:
            got = "".join(s.text_stream)
            final = s.get_final_message()
        expect(got == text, f"text_stream {got!r}, expected {text!r}")
        expect_message(final, text)
        return tokens(final.usage)

    def tool_round_trip():
        ask = [{"role": "user", "content": ASK_TOOL}]
        msg = client.messages.create(model=model, max_tokens=64, tools=MESSAGES_TOOLS, messages=ask)
        use = expect_tool_use(msg)
        figures = tokens(msg.usage)
        back = ask + [
            {"role": "assistant", "content": msg.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": RESULT}]},
        ]
        second = client.messages.create(model=model, max_tokens=64, tools=MESSAGES_TOOLS, messages=back)
        expect_message(second)
        expect(RESULT in text_of(second), f"text {text_of(second)!r} lacks {RESULT!r}")
        return f"tool_use {use.id}; {figures}; then " + tokens(second.usage)

    def tool_round_trip_streamed():
        ask = [{"role": "user", "content": ASK_TOOL}]
        partial = []
        with client.messages.stream(model=model, max_tokens=64, tools=MESSAGES_TOOLS, messages=ask) as s:
            for event in s:
                if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    partial.append(event.delta.partial_json)
            msg = s.get_final_message()
        use = expect_tool_use(msg)
        expect(json.loads("".join(partial)) == {"city": "mock"}, f"input_json_delta pieces {partial!r}")
        figures = tokens(msg.usage)
        back = ask + [
            {"role": "assistant", "content": msg.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": RESULT}]},
        ]
        with client.messages.stream(model=model, max_tokens=64, tools=MESSAGES_TOOLS, messages=back) as s:
            text = "".join(s.text_stream)
            second = s.get_final_message()
        expect(RESULT in text, f"text_stream {text!r} lacks {RESULT!r}")
        expect_message(second)
        return f"{len(partial)} input_json_delta pieces; {figures}; then " + tokens(second.usage)

    def count_tokens():
        counted = client.messages.count_tokens(
            model=model,
            system="Be brief.",
            messages=[{"role": "user", "content": "How many tokens is this?"}],
            tools=MESSAGES_TOOLS,
        )
        expect(isinstance(counted.input_tokens, int) and counted.input_tokens > 0, f"{counted!r}")
        return f"{counted.input_tokens} input tokens"

    def other_auth(how):
        def run():
            c = anthropic_client(KEY_OK, how)
            msg = c.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "Hi " + how}])
            expect_message(msg, "Hi " + how)
            return tokens(msg.usage)

        return run

    check("messages plain", model, plain)
    check("messages system + text blocks", model, system_and_blocks)
    check("messages streamed", model, streamed)
    check("messages tool round trip", model, tool_round_trip)
    check("messages tool round trip streamed", model, tool_round_trip_streamed)
    check("messages count_tokens", model, count_tokens)
    if first:
        check("messages with auth_token (Authorization: Bearer)", model, other_auth("auth_token"))
        check("messages with x-api-key only", model, other_auth("x-api-key"))


# ---------------------------------------------------------------------------
# Refusals


def refused(call, error, status):
    """The SDK error that call() raised; fails unless it is `error` with `status`."""
    try:
        call()
    except error as e:
        expect(e.status_code == status, f"status {e.status_code}, expected {status}")
        return e
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        raise AssertionError(f"{type(e).__name__} {e.status_code}, expected {error.__name__} {status}") from e
    raise AssertionError("the request was served")


def refusal_checks(model):
    revoked, narrow = os.environ["KEY_REVOKED"], os.environ["KEY_NARROW"]
    ask_r = {"model": model, "input": "x", "max_output_tokens": 16}
    ask_m = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}

    def openai_body(e):
        # The openai SDK keeps the `error` object of the body.
        expect(isinstance(e.body, dict), f"body {e.body!r}")
        expect(isinstance(e.body.get("message"), str) and e.body["message"], f"body {e.body!r} has no message")
        expect("code" in e.body, f"body {e.body!r} has no code")

    def anthropic_body(e, kind):
        b = e.body
        expect(isinstance(b, dict) and b.get("type") == "error", f"body {b!r} is not Anthropic's error shape")
        err = b.get("error")
        expect(isinstance(err, dict) and err.get("type") == kind, f"body {b!r}: error.type is not {kind!r}")
        expect(isinstance(err.get("message"), str) and err["message"], f"body {b!r} has no message")

    def revoked_responses():
        e = refused(lambda: openai_client(revoked).responses.create(**ask_r), openai.AuthenticationError, 401)
        openai_body(e)
        return f"{e.status_code} {e.body.get('code')}: {e.body.get('message')}"

    def revoked_messages(how):
        def run():
            c = anthropic_client(revoked, how)
            e = refused(lambda: c.messages.create(**ask_m), anthropic.AuthenticationError, 401)
            anthropic_body(e, "authentication_error")
            return f"{e.status_code}: {e.body['error']['message']}"

        return run

    def narrow_responses():
        e = refused(lambda: openai_client(narrow).responses.create(**ask_r), openai.PermissionDeniedError, 403)
        openai_body(e)
        return f"{e.status_code} {e.body.get('code')}: {e.body.get('message')}"

    def narrow_messages():
        e = refused(lambda: anthropic_client(narrow).messages.create(**ask_m), anthropic.PermissionDeniedError, 403)
        anthropic_body(e, "permission_error")
        return f"{e.status_code}: {e.body['error']['message']}"

    check("revoked key: responses AuthenticationError", model, revoked_responses)
    check("revoked key: messages AuthenticationError", model, revoked_messages("api_key"))
    check("revoked key: messages (x-api-key) AuthenticationError", model, revoked_messages("x-api-key"))
    check("narrow key: responses PermissionDeniedError", model, narrow_responses)
    check("narrow key: messages PermissionDeniedError", model, narrow_messages)


def main():
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, {BASE}, models {MODELS}", flush=True)
    for i, model in enumerate(MODELS):
        if "responses" in CHECKS:
            responses_checks(model)
        if "messages" in CHECKS:
            messages_checks(model, first=i == 0)
    if "refusals" in CHECKS:
        refusal_checks(MODELS[0])
    print("all agent API checks passed")


if __name__ == "__main__":
    main()
