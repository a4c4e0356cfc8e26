// The MCP protocol side: the official SDK's Server with tools/list and
// tools/call. One instance per HTTP request (stateless Streamable HTTP).
// The low-level Server (not McpServer) is used because McpServer only takes
// Zod schemas and would re-derive the JSON Schema clients see; here the
// spec's inputSchema is served verbatim and validated with ajv.
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, McpError } from "@modelcontextprotocol/sdk/types.js";
import type { Tool } from "@modelcontextprotocol/sdk/types.js";
import type { PreparedTool, ToolRunner } from "./tools.js";
import type { ServerDefinition } from "./types.js";

export function listedTools(tools: ReadonlyMap<string, PreparedTool>): Tool[] {
  return [...tools.values()].map(({ def }) => {
    const t: Tool = {
      name: def.name,
      description: def.description,
      inputSchema: def.inputSchema as Tool["inputSchema"],
    };
    if (def.title) t.title = def.title;
    if (Object.keys(def.annotations).length > 0) t.annotations = { ...def.annotations };
    return t;
  });
}

export function createMcpServer(
  server: ServerDefinition,
  tools: ReadonlyMap<string, PreparedTool>,
  listed: Tool[],
  runner: ToolRunner,
): Server {
  const mcp = new Server(
    { name: server.name, version: server.version },
    { capabilities: { tools: { listChanged: false } }, instructions: server.description },
  );
  mcp.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: listed }));
  mcp.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const tool = tools.get(request.params.name);
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    return runner.call(tool, request.params.arguments ?? {}, extra.signal);
  });
  return mcp;
}
