"""The MCP server: keel's memory tools for any agent, over stdio or streamable HTTP."""
