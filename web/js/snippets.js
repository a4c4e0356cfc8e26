// Install snippets made in the browser from the server's URL, used only when
// the API does not provide `installSnippets` (the API's own, from
// bmm-auth's snippets.rs, win). Same clients, titles and formats.

function slugify(name) {
  return String(name || 'server').toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'server';
}

export function localSnippets(name, url) {
  const key = slugify(name);
  const pretty = (v) => JSON.stringify(v, null, 2);
  return [
    { client: 'claude-desktop', title: 'Claude Desktop', format: 'text',
      body: `1. Open Settings → Connectors.\n2. Choose "Add custom connector".\n3. Name: ${name}\n4. URL: ${url}\n5. Choose Add, then Connect, and approve access in the browser window that opens.` },
    { client: 'claude-desktop-json', title: 'Claude Desktop (config file, through mcp-remote)', format: 'json',
      body: pretty({ mcpServers: { [key]: { command: 'npx', args: ['-y', 'mcp-remote', url] } } }) },
    { client: 'claude-code', title: 'Claude Code', format: 'shell', body: `claude mcp add --transport http ${key} ${url}` },
    { client: 'cursor', title: 'Cursor (.cursor/mcp.json)', format: 'json', body: pretty({ mcpServers: { [key]: { url } } }) },
    { client: 'vscode', title: 'VS Code (.vscode/mcp.json)', format: 'json', body: pretty({ servers: { [key]: { type: 'http', url } } }) },
    { client: 'chatgpt', title: 'ChatGPT', format: 'text',
      body: `1. Open Settings → Connectors (turn on developer mode under Advanced if Create is not shown).\n2. Choose Create.\n3. Name: ${name}\n4. MCP server URL: ${url}\n5. Authentication: OAuth.\n6. Choose Create and approve access in the window that opens.` },
  ];
}
