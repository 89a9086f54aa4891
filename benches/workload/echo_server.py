"""A small MCP server on the official Python SDK (FastMCP, Streamable HTTP on uvicorn),
for the benchmark's keep-alive comparison: `python3 echo_server.py PORT`."""

import sys

from mcp.server.fastmcp import FastMCP

server = FastMCP("echo", host="127.0.0.1", port=int(sys.argv[1]), log_level="WARNING")


@server.tool(name="echo.say")
def say(text: str) -> str:
    """Say it back."""
    return text


@server.tool(name="echo.add")
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


server.run(transport="streamable-http")
