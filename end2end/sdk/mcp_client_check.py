"""The `mcp` Python SDK's Streamable HTTP client (1.x or 2.x), unchanged, through
Tollgate's MCP gateway with a Tollgate key: it lists only the allowed
tool, calls it, is refused the other with an error naming the rule, reads
the server's resource; then (after the test revokes the key and writes a
line to stdin) is refused on its next call in the same session.

Environment: MCP_URL (Tollgate's /mcp/{server}), KEY.
"""

import asyncio
import os
import sys
from datetime import timedelta

from mcp import ClientSession

try:  # mcp 1.x
    from mcp.shared.exceptions import McpError as MCPError

    def seconds(n):
        return timedelta(seconds=n)

except ImportError:  # mcp 2.x
    from mcp.shared.exceptions import MCPError

    def seconds(n):
        return float(n)

try:  # mcp 1.x
    from mcp.client.streamable_http import streamablehttp_client

    def connect(url, headers):
        return streamablehttp_client(url, headers=headers)

except ImportError:  # mcp 2.x: headers go on the HTTP client
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    def connect(url, headers):
        return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=30))

URL = os.environ["MCP_URL"]
KEY = os.environ["KEY"]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        os._exit(1)  # not an exception: nothing below may catch it
    print(f"ok: {what}", flush=True)


async def main():
    headers = {"Authorization": f"Bearer {KEY}"}
    revoked_refused = None
    try:
        async with connect(URL, headers) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write, read_timeout_seconds=seconds(20)) as s:
                init = await s.initialize()
                info = getattr(init, "serverInfo", None) or getattr(init, "server_info", None)
                check(info is not None and info.name == "upstream", f"initialize through the gateway ({init})")
                if len(streams) > 2 and os.environ.get("DIRECT") is None:
                    sid = streams[2]()
                    check(sid is not None and sid.startswith("v1:"), f"the session id is Tollgate's sealed one ({sid})")

                tools = await s.list_tools()
                names = [t.name for t in tools.tools]
                check(names == ["add"], f"tools/list shows only the allowed tool ({names})")

                r = await s.call_tool("add", {"a": 2, "b": 3})
                text = r.content[0].text if r.content else ""
                check(not getattr(r, "isError", getattr(r, "is_error", False)) and text == "5", f"tools/call add(2, 3) = {text}")

                try:
                    await s.call_tool("delete_everything", {})
                    check(False, "delete_everything was refused")
                except MCPError as e:
                    msg = e.error.message
                    check(
                        "does not allow the tool 'delete_everything'" in msg,
                        f"the other tool is refused naming the rule: {msg}",
                    )
                    check(
                        (e.error.data or {}).get("rule") == "tool_not_allowed",
                        f"the error's data names the rule ({e.error.data})",
                    )

                res = await s.list_resources()
                uris = [str(x.uri) for x in res.resources]
                check(uris == ["notes://today"], f"resources/list passes through ({uris})")
                note = await s.read_resource("notes://today")
                check(note.contents[0].text == "Buy milk", "resources/read passes through")

                print("READY", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                try:
                    await s.call_tool("add", {"a": 1, "b": 1}, read_timeout_seconds=seconds(10))
                    revoked_refused = False
                except Exception as e:  # the SDK ends the session on a 401
                    revoked_refused = f"{type(e).__name__}: {e}"
    except BaseException as e:  # the transport's task group re-raises the 401
        if revoked_refused is None:
            revoked_refused = f"{type(e).__name__}: {e}"
    check(bool(revoked_refused), f"the revoked key is refused on its next call ({revoked_refused})")
    print("all mcp checks passed", flush=True)


asyncio.run(main())
