"""Two upstreams nobody at Tollgate wrote, for the agent-API tests: a chat-only
OpenAI-compatible server (like vLLM or Ollama without the Responses API) and
an Anthropic Messages server. Standard library only.

    python fake_upstreams.py [--accept-bearer]

starts both on 127.0.0.1 at ports the system picks and prints one line of
JSON, flushed:

    {"openai": "http://127.0.0.1:P1/v1", "anthropic": "http://127.0.0.1:P2/v1"}

then serves until SIGTERM or, when standard input is a pipe (spawn it with
stdin piped so it dies with its parent), until that pipe closes.

Both record every request (method, path, headers lower-cased, body as JSON
where it parses) and list them at `GET /_seen`; `DELETE /_seen` forgets them.

Both answer the same way, as Tollgate's built-in mock does:
- the reply echoes the text of the last user message; when the last turn is
  tool results (chat: `tool` messages; Anthropic: `tool_result` blocks) it is
  `Tool result: <their text>`;
- when tools are offered, `tool_choice` is not none and the last message is
  the user's and names an offered tool (or `tool_choice` forces one), the
  reply calls that tool with arguments made from its JSON schema: each
  required property (every property when none is required) is "mock" for a
  string, 1 for an integer or number, true for a boolean, [] for an array,
  {} for an object;
- tokens are counted as max(1, characters // 4); a text reply stops at
  max_tokens (finish_reason "length" / stop_reason "max_tokens").

OpenAI side: `POST /v1/chat/completions` (plain, or SSE `data:` lines ending
with `data: [DONE]`, and a last `choices: []` chunk with `usage` when
`stream_options.include_usage`); every other path is a 404. It wants
`Authorization: Bearer <something>`.

Anthropic side: `POST /v1/messages` (plain, or SSE with the real event
sequence: message_start, ping, content_block_start/delta/stop, message_delta,
message_stop, each `event: <type>` + `data: <json>`) and
`POST /v1/messages/count_tokens`. It wants `x-api-key` (what Tollgate sends
upstream) and `anthropic-version`; with --accept-bearer it also takes
`Authorization: Bearer` instead of `x-api-key`, which is what the anthropic
SDK itself sends for `api_key=` (so the SDK can be pointed straight at it).
"""

import itertools
import json
import os
import re
import signal
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---------------------------------------------------------------------------
# The shared behaviour


def count(text):
    """Tokens of `text`: roughly four characters each, at least one."""
    return max(1, len(text) // 4)


def cut(text, max_tokens):
    """`text` and whether it was cut so that count() stays within max_tokens."""
    if not isinstance(max_tokens, int) or max_tokens <= 0 or count(text) <= max_tokens:
        return text, False
    keep = text[: max_tokens * 4]
    # End on a whole word when there is one.
    if not text[len(keep)].isspace() and re.search(r"\s", keep):
        keep = re.sub(r"\s+\S*$", "", keep)
    return keep.rstrip(), True


def pieces(text):
    """Stream pieces of `text`: a word with the space after it each."""
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def split_json(s):
    """`s` in at least two pieces, as a model streams a tool's arguments."""
    if len(s) < 2:
        return [s, ""]
    n = max(1, len(s) // 3)
    parts = [s[i : i + n] for i in range(0, len(s), n)]
    return parts if len(parts) >= 2 else [s[:1], s[1:]]


def value_for(schema):
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return {"string": "mock", "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(kind)


def arguments_for(schema):
    """The arguments a call to a tool with this JSON schema gets."""
    schema = schema if isinstance(schema, dict) else {}
    props = schema.get("properties") or {}
    required = schema.get("required") or []
    names = [n for n in props if n in required] if required else list(props)
    return {n: value_for(props[n]) for n in names}


def pick_tool(tools, choice, text):
    """(name, schema) of the tool to call, or None.

    `tools` is [(name, schema)], `choice` one of None / "none" / "auto" /
    "required" / ("named", name) (normalised by each dialect)."""
    if not tools or choice == "none":
        return None
    if isinstance(choice, tuple):
        return next((t for t in tools if t[0] == choice[1]), None)
    named = next((t for t in tools if t[0] and t[0] in text), None)
    if named:
        return named
    return tools[0] if choice == "required" else None


def text_of(content):
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")
        )
    return ""


class Counter:
    def __init__(self):
        self._it = itertools.count(1)
        self._lock = threading.Lock()

    def next(self):
        with self._lock:
            return next(self._it)


# ---------------------------------------------------------------------------
# HTTP plumbing


class Refused(Exception):
    def __init__(self, status, body):
        super().__init__(status)
        self.status = status
        self.body = body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"

    def log_message(self, format, *args):  # noqa: A002 - quiet: the test reads stdout
        pass

    # -- reading

    def read_body(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def record(self, raw):
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        with self.server.lock:
            self.server.seen.append(entry)
        return body

    # -- writing

    def send_json(self, status, obj, headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_sse(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def send_chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_sse(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- dispatch

    def handle_any(self):
        raw = self.read_body()
        if self.path.split("?")[0] == "/_seen":
            if self.command == "DELETE":
                with self.server.lock:
                    self.server.seen.clear()
                return self.send_json(200, [])
            with self.server.lock:
                return self.send_json(200, list(self.server.seen))
        body = self.record(raw)
        try:
            self.route(body)
        except Refused as r:
            self.send_json(r.status, r.body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - a bug here answers 500 rather than dropping the connection
            import traceback

            traceback.print_exc()
            self.send_json(500, {"error": {"message": f"fake upstream failed: {e!r}", "type": "server_error"}})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def route(self, body):
        raise NotImplementedError


# ---------------------------------------------------------------------------
# The chat-only OpenAI-compatible server


def openai_error(status, message, kind="invalid_request_error", code=None, param=None):
    return Refused(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


# What OpenAI's chat completions take; anything else is refused as OpenAI does
# (a gateway that leaks Responses fields such as `input` or `max_output_tokens`
# into a chat request is caught here).
CHAT_FIELDS = set(
    "model messages stream stream_options max_tokens max_completion_tokens temperature top_p n stop "
    "presence_penalty frequency_penalty logit_bias logprobs top_logprobs user seed tools tool_choice "
    "parallel_tool_calls response_format metadata store service_tier reasoning_effort modalities audio "
    "prediction web_search_options safety_identifier prompt_cache_key verbosity functions function_call".split()
)
CHAT_PARTS = {"text", "image_url", "input_audio", "file", "refusal", "audio"}


class OpenAIHandler(Handler):
    def route(self, body):
        path = self.path.split("?")[0].rstrip("/")
        if self.command != "POST" or path != "/v1/chat/completions":
            raise Refused(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        auth = self.headers.get("authorization") or ""
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            raise openai_error(401, "You didn't provide an API key (Authorization: Bearer).", code="invalid_api_key")
        if not isinstance(body, dict):
            raise openai_error(400, "the body is not a JSON object")
        self.chat(body)

    def chat(self, body):
        for k in body:
            if k not in CHAT_FIELDS:
                raise openai_error(400, f"Unrecognized request argument supplied: {k}", param=k)
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise openai_error(400, "you must provide a model parameter", param="model")
        if not isinstance(messages, list) or not messages:
            raise openai_error(400, "messages must be a non-empty array", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                raise openai_error(400, f"messages[{i}]: unknown role", param=f"messages[{i}].role")
            content = m.get("content")
            if content is None and not (m["role"] == "assistant" and m.get("tool_calls")):
                raise openai_error(400, f"messages[{i}].content: required", param=f"messages[{i}].content")
            if content is not None and not isinstance(content, (str, list)):
                raise openai_error(400, f"messages[{i}].content: a string or an array", param=f"messages[{i}].content")
            for j, part in enumerate(content if isinstance(content, list) else []):
                if not isinstance(part, dict) or part.get("type") not in CHAT_PARTS:
                    raise openai_error(
                        400,
                        f"Invalid value: {part.get('type') if isinstance(part, dict) else part!r}. "
                        f"Supported values are: {', '.join(sorted(CHAT_PARTS))}.",
                        param=f"messages[{i}].content[{j}].type",
                    )
            for j, c in enumerate(m.get("tool_calls") or []):
                f = c.get("function") if isinstance(c, dict) else None
                if not isinstance(f, dict) or not isinstance(f.get("arguments"), str) or not c.get("id"):
                    raise openai_error(
                        400,
                        "a tool call needs an id and function.arguments as a JSON string",
                        param=f"messages[{i}].tool_calls[{j}]",
                    )
        for j, t in enumerate(body.get("tools") or []):
            f = t.get("function") if isinstance(t, dict) else None
            if not isinstance(f, dict) or t.get("type") != "function" or not f.get("name"):
                raise openai_error(
                    400, "a tool is {type: 'function', function: {name, parameters}}", param=f"tools[{j}].function"
                )
        # As OpenAI: a `tool` message answers a call of the assistant message before it.
        called = set()
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                called = {c.get("id") for c in m.get("tool_calls") or [] if isinstance(c, dict)}
            elif m["role"] == "tool":
                if m.get("tool_call_id") not in called:
                    raise openai_error(
                        400,
                        f"messages[{i}]: a 'tool' message must answer a tool_calls id of the assistant message before it",
                        param=f"messages[{i}].tool_call_id",
                    )
            else:
                called = set()

        tools = [
            (t["function"].get("name"), t["function"].get("parameters"))
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
        ]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = ("named", (choice.get("function") or {}).get("name"))
        prompt_text = "".join(text_of(m.get("content")) for m in messages) + (
            json.dumps(body["tools"]) if body.get("tools") else ""
        )
        prompt_tokens = count(prompt_text)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")

        last = messages[-1]
        call = None
        if last["role"] == "tool":
            results = []
            for m in reversed(messages):
                if m["role"] != "tool":
                    break
                results.insert(0, text_of(m.get("content")))
            text = "Tool result: " + "\n".join(results)
        else:
            user = next((m for m in reversed(messages) if m["role"] == "user"), None)
            text = text_of(user.get("content")) if user else ""
            if last["role"] == "user":
                tool = pick_tool(tools, choice, text)
                if tool:
                    call = {
                        "id": f"call_{self.server.ids.next()}",
                        "type": "function",
                        "function": {
                            "name": tool[0],
                            "arguments": json.dumps(arguments_for(tool[1]), separators=(",", ":")),
                        },
                    }
        if call:
            finish = "tool_calls"
            completion_tokens = count(call["function"]["name"] + call["function"]["arguments"])
        else:
            text, was_cut = cut(text, max_tokens)
            finish = "length" if was_cut else "stop"
            completion_tokens = count(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        rid = f"chatcmpl-fake{self.server.ids.next()}"
        created = int(time.time())

        if not body.get("stream"):
            message = {"role": "assistant", "content": None if call else text, "refusal": None}
            if call:
                message["tool_calls"] = [call]
            return self.send_json(
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": usage,
                },
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None):
            c = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                c["usage"] = None
            return c

        events = []
        if call:
            events.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ],
                    }
                )
            )
            for p in split_json(call["function"]["arguments"]):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
        else:
            events.append(chunk({"role": "assistant", "content": ""}))
            for p in pieces(text):
                events.append(chunk({"content": p}))
        events.append(chunk({}, finish))
        if include_usage:
            last_chunk = chunk({})
            last_chunk["choices"] = []
            last_chunk["usage"] = usage
            events.append(last_chunk)
        self.start_sse()
        for e in events:
            self.send_chunk(f"data: {json.dumps(e)}\n\n")
        self.send_chunk("data: [DONE]\n\n")
        self.end_sse()


# ---------------------------------------------------------------------------
# The Anthropic Messages server


# What Anthropic's Messages API takes; anything else is refused as Anthropic
# does ("Extra inputs are not permitted").
MESSAGES_FIELDS = set(
    "model messages max_tokens system stream stop_sequences metadata tools tool_choice thinking "
    "temperature top_p top_k service_tier container output_config cache_control context_management "
    "mcp_servers diagnostics inference_geo speed".split()
)
COUNT_FIELDS = set(
    "model messages system tools tool_choice thinking output_config cache_control context_management "
    "mcp_servers speed".split()
)
BLOCKS = set(
    "text image document search_result tool_use tool_result thinking redacted_thinking server_tool_use "
    "web_search_tool_result web_fetch_tool_result code_execution_tool_result mcp_tool_use mcp_tool_result "
    "container_upload".split()
)


def anthropic_error(status, kind, message):
    return Refused(status, {"type": "error", "error": {"type": kind, "message": message}})


def tool_result_text(block):
    content = block.get("content")
    return text_of(content) if content is not None else ""


class AnthropicHandler(Handler):
    def route(self, body):
        path = self.path.split("?")[0].rstrip("/")
        if self.command != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            raise anthropic_error(404, "not_found_error", f"{self.command} {path} not found")
        key = self.headers.get("x-api-key") or ""
        auth = self.headers.get("authorization") or ""
        bearer = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
        if not key.strip() and not (self.server.accept_bearer and bearer):
            raise anthropic_error(401, "authentication_error", "x-api-key header is required")
        if not self.headers.get("anthropic-version"):
            raise anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body, dict):
            raise anthropic_error(400, "invalid_request_error", "the body is not a JSON object")
        self.read_request(body, counting=path.endswith("count_tokens"))

    def read_request(self, body, counting):
        for k in body:
            if k not in (COUNT_FIELDS if counting else MESSAGES_FIELDS):
                raise anthropic_error(400, "invalid_request_error", f"{k}: Extra inputs are not permitted")
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise anthropic_error(400, "invalid_request_error", "model: Field required")
        if not isinstance(messages, list) or not messages:
            raise anthropic_error(400, "invalid_request_error", "messages: at least one message is required")
        if not counting and (not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1):
            raise anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise anthropic_error(
                    400, "invalid_request_error", f"messages.{i}.role: Input should be 'user' or 'assistant'"
                )
            content = m.get("content")
            if not isinstance(content, (str, list)):
                raise anthropic_error(400, "invalid_request_error", f"messages.{i}.content: Field required")
            for j, b in enumerate(content if isinstance(content, list) else []):
                where = f"messages.{i}.content.{j}"
                kind = b.get("type") if isinstance(b, dict) else None
                if kind not in BLOCKS:
                    raise anthropic_error(
                        400,
                        "invalid_request_error",
                        f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags",
                    )
                if kind == "text" and not isinstance(b.get("text"), str):
                    raise anthropic_error(400, "invalid_request_error", f"{where}.text: Field required")
                if kind == "tool_use" and (
                    not isinstance(b.get("input"), dict) or not b.get("id") or not b.get("name")
                ):
                    raise anthropic_error(
                        400,
                        "invalid_request_error",
                        f"{where}.tool_use: id, name and input (a valid dictionary) are required",
                    )
        for j, t in enumerate(body.get("tools") or []):
            custom = isinstance(t, dict) and t.get("type") in (None, "custom")
            if not isinstance(t, dict) or not t.get("name") or (custom and not isinstance(t.get("input_schema"), dict)):
                raise anthropic_error(400, "invalid_request_error", f"tools.{j}.custom.input_schema: Field required")
            for k in ("parameters", "function", "strict_schema"):
                if k in t:
                    raise anthropic_error(
                        400, "invalid_request_error", f"tools.{j}.custom.{k}: Extra inputs are not permitted"
                    )
        # As Anthropic: tool_result blocks answer tool_use ids of the assistant message just before.
        for i, m in enumerate(messages):
            blocks = m["content"] if isinstance(m["content"], list) else []
            results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
            if not results:
                continue
            prev = messages[i - 1] if i > 0 else {}
            prev_blocks = prev.get("content") if isinstance(prev.get("content"), list) else []
            uses = {b.get("id") for b in prev_blocks if isinstance(b, dict) and b.get("type") == "tool_use"}
            for b in results:
                if m["role"] != "user" or b.get("tool_use_id") not in uses:
                    raise anthropic_error(
                        400,
                        "invalid_request_error",
                        f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{b.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message.",
                    )
        system = body.get("system")
        if system is not None and not isinstance(system, (str, list)):
            raise anthropic_error(400, "invalid_request_error", "system: Input should be a string or a list")

        tools = [
            (t.get("name"), t.get("input_schema"))
            for t in body.get("tools") or []
            if isinstance(t, dict) and "input_schema" in t
        ]
        tc = body.get("tool_choice") or {}
        choice = {"none": "none", "any": "required", "auto": "auto"}.get(tc.get("type"), None)
        if tc.get("type") == "tool":
            choice = ("named", tc.get("name"))

        prompt_text = (text_of(system) if system else "") + "".join(
            text_of(m["content"])
            + "".join(
                tool_result_text(b) + json.dumps(b.get("input", {}))
                for b in (m["content"] if isinstance(m["content"], list) else [])
                if isinstance(b, dict) and b.get("type") in ("tool_result", "tool_use")
            )
            for m in messages
        )
        if body.get("tools"):
            prompt_text += json.dumps(body["tools"])
        input_tokens = count(prompt_text)
        if counting:
            return self.send_json(200, {"input_tokens": input_tokens})

        last = messages[-1]
        last_blocks = last["content"] if isinstance(last["content"], list) else []
        results = [b for b in last_blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        use = None
        if last["role"] == "user" and results:
            text = "Tool result: " + "\n".join(tool_result_text(b) for b in results)
        else:
            user = next((m for m in reversed(messages) if m["role"] == "user"), None)
            text = text_of(user["content"]) if user else ""
            if last["role"] == "user":
                tool = pick_tool(tools, choice, text)
                if tool:
                    use = {
                        "type": "tool_use",
                        "id": f"toolu_{self.server.ids.next()}",
                        "name": tool[0],
                        "input": arguments_for(tool[1]),
                    }
        if use:
            stop = "tool_use"
            output_tokens = count(use["name"] + json.dumps(use["input"]))
            content = [use]
        else:
            text, was_cut = cut(text, body["max_tokens"])
            stop = "max_tokens" if was_cut else "end_turn"
            output_tokens = count(text)
            content = [{"type": "text", "text": text}]
        mid = f"msg_fake{self.server.ids.next()}"

        if not body.get("stream"):
            return self.send_json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                },
            )

        def event(kind, data):
            data = {"type": kind, **data}
            self.send_chunk(f"event: {kind}\ndata: {json.dumps(data)}\n\n")

        self.start_sse()
        event(
            "message_start",
            {
                "message": {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                }
            },
        )
        event("ping", {})
        if use:
            event("content_block_start", {"index": 0, "content_block": {**use, "input": {}}})
            for p in [""] + split_json(json.dumps(use["input"], separators=(",", ":"))):
                event("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": p}})
        else:
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            for p in pieces(text):
                event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}})
        event("content_block_stop", {"index": 0})
        event(
            "message_delta",
            {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": output_tokens}},
        )
        event("message_stop", {})
        self.end_sse()


# ---------------------------------------------------------------------------


def serve(handler, **attrs):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.seen = []
    server.lock = threading.Lock()
    server.ids = Counter()
    for k, v in attrs.items():
        setattr(server, k, v)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stdin_is_watchable():
    """True when standard input is a pipe, socket or terminal whose close means 'stop'."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)


def main():
    accept_bearer = "--accept-bearer" in sys.argv[1:]
    openai = serve(OpenAIHandler)
    anthropic = serve(AnthropicHandler, accept_bearer=accept_bearer)
    print(
        json.dumps(
            {
                "openai": f"http://127.0.0.1:{openai.server_address[1]}/v1",
                "anthropic": f"http://127.0.0.1:{anthropic.server_address[1]}/v1",
            }
        ),
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if stdin_is_watchable():

        def watch():
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch, daemon=True).start()
    while not stop.wait(0.5):
        pass
    openai.shutdown()
    anthropic.shutdown()


if __name__ == "__main__":
    main()
