// Install snippets made in the browser from the server's URL, used only when
// the API does not provide `installSnippets` (the API's version wins).

export function localSnippets(slug, url) {
  const name = slug || 'my-server';
  return [
    {
      client: 'claude-desktop', label: 'Claude Desktop',
      instructions: 'Settings → Connectors → Add custom connector, and paste the URL. Or add this to claude_desktop_config.json (it uses mcp-remote for OAuth):',
      snippet: JSON.stringify({ mcpServers: { [name]: { command: 'npx', args: ['-y', 'mcp-remote', url] } } }, null, 2),
    },
    {
      client: 'claude-code', label: 'Claude Code',
      instructions: 'Run in a terminal; Claude Code opens the browser to sign in the first time (/mcp).',
      snippet: `claude mcp add --transport http ${name} ${url}`,
    },
    {
      client: 'cursor', label: 'Cursor',
      instructions: 'Add to ~/.cursor/mcp.json (or .cursor/mcp.json in a project):',
      snippet: JSON.stringify({ mcpServers: { [name]: { url } } }, null, 2),
    },
    {
      client: 'vscode', label: 'VS Code',
      instructions: 'Add to .vscode/mcp.json in your workspace (or run “MCP: Add Server…”):',
      snippet: JSON.stringify({ servers: { [name]: { type: 'http', url } } }, null, 2),
    },
    {
      client: 'chatgpt', label: 'ChatGPT',
      instructions: 'Settings → Connectors → Create (developer mode): paste the URL and choose OAuth as the authentication.',
      snippet: `URL: ${url}\nAuthentication: OAuth`,
    },
  ];
}
