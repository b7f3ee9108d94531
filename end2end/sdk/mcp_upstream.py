"""An MCP server nobody at Tollgate wrote, with two tools and one resource,
on Streamable HTTP at http://127.0.0.1:PORT/mcp: the `mcp` Python SDK's
FastMCP (mcp 1.x, the initialize handshake and sessions) or, run with
mcp 2.x, the same server as its renamed MCPServer (which also speaks the
stateless 2026-07-28 protocol). The MCP gateway test starts it.

    python mcp_upstream.py PORT
"""

import sys

from mcp.server.transport_security import TransportSecuritySettings

try:
    from mcp.server.fastmcp import FastMCP as Server

    V1 = True
except ModuleNotFoundError:  # mcp 2.x
    from mcp.server.mcpserver import MCPServer as Server

    V1 = False

port = int(sys.argv[1])
# The gateway calls it by address; the SDK's Host check is for browsers.
security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
if V1:
    mcp = Server("upstream", host="127.0.0.1", port=port, transport_security=security)
else:
    mcp = Server("upstream")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@mcp.tool()
def delete_everything() -> str:
    """What no key should be allowed to call."""
    return "everything deleted"


@mcp.resource("notes://today")
def today() -> str:
    """Today's note."""
    return "Buy milk"


if __name__ == "__main__":
    if V1:
        mcp.run(transport="streamable-http")
    else:
        mcp.run(transport="streamable-http", host="127.0.0.1", port=port, transport_security=security)
