//! The MCP smoke client (see docs/ARCHITECTURE.md).
