//! Install snippets: how to add a server to each MCP client, generated from
//! its URL. Clients do the OAuth themselves, so no snippet carries a secret.

use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snippet {
    /// Stable key: `claude-desktop`, `claude-code`, `cursor`, `vscode`, `chatgpt`.
    pub client: String,
    pub title: String,
    /// How to show `body`: `text` (steps), `shell` or `json`.
    pub format: String,
    pub body: String,
}

fn snippet(client: &str, title: &str, format: &str, body: String) -> Snippet {
    Snippet { client: client.into(), title: title.into(), format: format.into(), body }
}

/// A name usable as a config key and a shell word: the slugified server name.
fn config_name(name: &str) -> String {
    bmm_core::slug::slugify(name)
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON value serialises")
}

/// The snippets for a server called `name` served at `url` (`…/s/{slug}/mcp`).
pub fn install_snippets(name: &str, url: &str) -> Vec<Snippet> {
    let key = config_name(name);
    vec![
        snippet(
            "claude-desktop",
            "Claude Desktop",
            "text",
            format!(
                "1. Open Settings → Connectors.\n2. Choose \"Add custom connector\".\n3. Name: {name}\n4. URL: {url}\n5. Choose Add, then Connect, and approve access in the browser window that opens."
            ),
        ),
        snippet(
            "claude-desktop-json",
            "Claude Desktop (config file, through mcp-remote)",
            "json",
            pretty(&json!({ "mcpServers": { key.clone(): { "command": "npx", "args": ["-y", "mcp-remote", url] } } })),
        ),
        snippet("claude-code", "Claude Code", "shell", format!("claude mcp add --transport http {key} {url}")),
        snippet(
            "cursor",
            "Cursor (.cursor/mcp.json)",
            "json",
            pretty(&json!({ "mcpServers": { key.clone(): { "url": url } } })),
        ),
        snippet(
            "vscode",
            "VS Code (.vscode/mcp.json)",
            "json",
            pretty(&json!({ "servers": { key.clone(): { "type": "http", "url": url } } })),
        ),
        snippet(
            "chatgpt",
            "ChatGPT",
            "text",
            format!(
                "1. Open Settings → Connectors (turn on developer mode under Advanced if Create is not shown).\n2. Choose Create.\n3. Name: {name}\n4. MCP server URL: {url}\n5. Authentication: OAuth.\n6. Choose Create and approve access in the window that opens."
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://bmm.example/s/weather/mcp";

    fn get<'a>(all: &'a [Snippet], client: &str) -> &'a Snippet {
        all.iter().find(|s| s.client == client).unwrap_or_else(|| panic!("no {client} snippet"))
    }

    #[test]
    fn every_client_gets_a_snippet_with_the_url() {
        let all = install_snippets("Weather API", URL);
        for c in ["claude-desktop", "claude-desktop-json", "claude-code", "cursor", "vscode", "chatgpt"] {
            assert!(get(&all, c).body.contains(URL), "{c}");
        }
    }

    #[test]
    fn json_snippets_are_valid_and_shaped_as_each_client_reads_them() {
        let all = install_snippets("Weather API", URL);
        let cursor: serde_json::Value = serde_json::from_str(&get(&all, "cursor").body).unwrap();
        assert_eq!(cursor, json!({"mcpServers": {"weather-api": {"url": URL}}}));
        let vscode: serde_json::Value = serde_json::from_str(&get(&all, "vscode").body).unwrap();
        assert_eq!(vscode, json!({"servers": {"weather-api": {"type": "http", "url": URL}}}));
        let desktop: serde_json::Value = serde_json::from_str(&get(&all, "claude-desktop-json").body).unwrap();
        assert_eq!(desktop["mcpServers"]["weather-api"]["args"], json!(["-y", "mcp-remote", URL]));
    }

    #[test]
    fn claude_code_command_is_one_shell_line_with_a_safe_name() {
        let all = install_snippets("Weather; rm -rf /", URL);
        assert_eq!(get(&all, "claude-code").body, format!("claude mcp add --transport http weather-rm-rf {URL}"));
    }

    #[test]
    fn text_snippets_name_the_settings_path_and_oauth() {
        let all = install_snippets("Weather", URL);
        assert!(get(&all, "claude-desktop").body.contains("Settings → Connectors"));
        let chatgpt = &get(&all, "chatgpt").body;
        assert!(chatgpt.contains("Settings → Connectors") && chatgpt.contains("OAuth"));
    }
}
