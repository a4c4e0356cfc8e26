// A hand-written stand-in for a generated server, used by the Docker and smoke
// tests: /healthz, and a minimal stateless MCP endpoint (JSON-RPC over
// Streamable HTTP). /mcp answers JSON, /mcp-sse answers an SSE stream,
// /mcp-paged pages tools/list one tool at a time.
import http from "node:http";

const port = Number(process.env.PORT || 8080);
const bearer = process.env.TEST_BEARER || "test-token";
const tools = (process.env.TEST_TOOLS || "echo,add").split(",").filter(Boolean);

if (process.env.TEST_CRASH) {
  console.error("fatal: TEST_CRASH is set, refusing to start");
  process.exit(3);
}

function json(res, status, body, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function answer(path, msg) {
  switch (msg.method) {
    case "initialize":
      return {
        protocolVersion: msg.params?.protocolVersion ?? "2025-06-18",
        capabilities: { tools: { listChanged: false } },
        serverInfo: { name: "test-server", version: "1.0.0" },
      };
    case "tools/list": {
      const all = tools.map((name) => ({ name, description: `the ${name} tool`, inputSchema: { type: "object" } }));
      if (path !== "/mcp-paged") return { tools: all };
      const at = Number(msg.params?.cursor ?? "0");
      const next = at + 1 < all.length ? String(at + 1) : undefined;
      return { tools: all.slice(at, at + 1), ...(next ? { nextCursor: next } : {}) };
    }
    case "tools/call": {
      const args = msg.params?.arguments ?? {};
      if (msg.params?.name === "echo") return { content: [{ type: "text", text: String(args.text ?? "") }] };
      if (msg.params?.name === "add") return { content: [{ type: "text", text: String(Number(args.a) + Number(args.b)) }] };
      return { content: [{ type: "text", text: `unknown tool ${msg.params?.name}` }], isError: true };
    }
    default:
      return null;
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/healthz") return json(res, 200, { status: "ok" });
  if (!["/mcp", "/mcp-sse", "/mcp-paged"].includes(url.pathname)) return json(res, 404, { error: "not found" });
  if (req.headers.authorization !== `Bearer ${bearer}`) {
    return json(res, 401, { error: "invalid_token" }, { "www-authenticate": 'Bearer error="invalid_token"' });
  }
  if (req.method !== "POST") return json(res, 405, { error: "method not allowed" }, { allow: "POST" });
  let msg;
  try {
    msg = JSON.parse(await readBody(req));
  } catch {
    return json(res, 400, { jsonrpc: "2.0", id: null, error: { code: -32700, message: "parse error" } });
  }
  console.log(JSON.stringify({ msg: "rpc", method: msg.method }));
  if (msg.id === undefined) {
    res.writeHead(202);
    return res.end();
  }
  const result = answer(url.pathname, msg);
  const reply = result
    ? { jsonrpc: "2.0", id: msg.id, result }
    : { jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: `method not found: ${msg.method}` } };
  if (url.pathname === "/mcp-sse") {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.write(": keep-alive\n\n");
    res.write(`event: message\nid: 1\ndata: ${JSON.stringify(reply)}\n\n`);
    return res.end();
  }
  json(res, 200, reply);
});

process.on("SIGTERM", () => server.close(() => process.exit(0)));
server.listen(port, "0.0.0.0", () => console.log(JSON.stringify({ msg: "listening", port })));
