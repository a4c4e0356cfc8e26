//! OAuth clients: dynamic registration (RFC 7591), redirect-URI rules, and
//! client authentication at the token and revocation endpoints.

use axum::http::HeaderMap;
use base64::Engine;
use bmm_core::crypto::{constant_time_eq, hash_token, new_token};
use bmm_db::schema::oauth_clients;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use serde_json::{Value, json};
use url::{Host, Url};
use uuid::Uuid;

use super::OAuthError;
use crate::error::AuthError;

pub const AUTH_METHODS: [&str; 3] = ["none", "client_secret_post", "client_secret_basic"];
pub const GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = oauth_clients)]
pub struct Client {
    pub id: Uuid,
    pub client_id: String,
    pub client_secret_hash: Option<Vec<u8>>,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub scope: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl Client {
    /// The name to show people: the registered name, else the client id.
    pub fn display_name(&self) -> &str {
        self.client_name.as_deref().filter(|n| !n.trim().is_empty()).unwrap_or(&self.client_id)
    }

    pub fn may_refresh(&self) -> bool {
        self.grant_types.iter().any(|g| g == "refresh_token")
    }

    /// The registered redirect URI that `requested` matches: exactly, or a
    /// loopback URI differing only in port (RFC 8252 §7.3).
    pub fn match_redirect(&self, requested: &str) -> Option<String> {
        if self.redirect_uris.iter().any(|r| r == requested) {
            return Some(requested.to_owned());
        }
        let req = Url::parse(requested).ok()?;
        if req.scheme() != "http" || !is_loopback_host(&req) {
            return None;
        }
        self.redirect_uris
            .iter()
            .filter_map(|r| Url::parse(r).ok())
            .find(|reg| {
                reg.scheme() == "http"
                    && is_loopback_host(reg)
                    && reg.host() == req.host()
                    && reg.path() == req.path()
                    && reg.query() == req.query()
            })
            .map(|_| requested.to_owned())
    }
}

pub async fn find_client(conn: &mut AsyncPgConnection, client_id: &str) -> Result<Option<Client>, AuthError> {
    Ok(oauth_clients::table
        .filter(oauth_clients::client_id.eq(client_id))
        .select(Client::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub(crate) fn is_loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// App schemes that predate RFC 8252's reverse-domain rule and that MCP
/// clients use today (`cursor://anysphere.cursor-retrieval/…`).
const KNOWN_APP_SCHEMES: [&str; 5] = ["cursor", "vscode", "vscode-insiders", "windsurf", "claude"];

/// A private-use scheme named for a domain the app's author controls
/// (`com.example.app`, RFC 8252 §7.1): at least two dot-separated labels of
/// lower-case letters, digits and hyphens.
fn is_reverse_domain_scheme(scheme: &str) -> bool {
    let labels: Vec<&str> = scheme.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Check one redirect URI: https; http only on loopback (127.0.0.1, [::1],
/// localhost, any port); or an app's private-use scheme, allowed by rule
/// (reverse-domain, RFC 8252) rather than by listing the dangerous ones
/// (`javascript:`, `ms-msdt:`, `intent:`, `tel:`… are all refused by it).
pub fn validate_redirect_uri(raw: &str) -> Result<(), String> {
    let u = Url::parse(raw).map_err(|e| format!("redirect URI {raw:?} is not an absolute URL ({e})"))?;
    if u.fragment().is_some() {
        return Err(format!("redirect URI {raw} must not contain a fragment (#…)"));
    }
    match u.scheme() {
        "https" => {
            if u.host().is_none() {
                return Err(format!("redirect URI {raw} has no host"));
            }
            Ok(())
        }
        "http" => {
            if is_loopback_host(&u) {
                Ok(())
            } else {
                Err(format!(
                    "redirect URI {raw} uses http on a non-loopback host; use https, or http on 127.0.0.1, [::1] or localhost"
                ))
            }
        }
        s if KNOWN_APP_SCHEMES.contains(&s) || is_reverse_domain_scheme(s) => Ok(()),
        s => Err(format!(
            "redirect URI scheme {s}: is not allowed; an app's own scheme must be a reverse domain name it controls, \
             such as com.example.app: (RFC 8252)"
        )),
    }
}

#[derive(Debug, Deserialize)]
pub struct RegistrationRequest {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// Register a client. Returns the registration response (RFC 7591 §3.2.1).
pub async fn register(conn: &mut AsyncPgConnection, body: &Value) -> Result<(Client, Value), OAuthError> {
    let req: RegistrationRequest = serde_json::from_value(body.clone()).map_err(|e| {
        OAuthError::bad("invalid_client_metadata", format!("registration is not valid client metadata: {e}"))
    })?;
    if req.redirect_uris.is_empty() {
        return Err(OAuthError::bad("invalid_redirect_uri", "redirect_uris must list at least one URI"));
    }
    if req.redirect_uris.len() > 20 {
        return Err(OAuthError::bad("invalid_redirect_uri", "at most 20 redirect URIs may be registered"));
    }
    for r in &req.redirect_uris {
        validate_redirect_uri(r).map_err(|m| OAuthError::bad("invalid_redirect_uri", m))?;
    }
    // RFC 7591's default is client_secret_basic.
    let method = req.token_endpoint_auth_method.clone().unwrap_or_else(|| "client_secret_basic".into());
    if !AUTH_METHODS.contains(&method.as_str()) {
        return Err(OAuthError::bad(
            "invalid_client_metadata",
            format!(
                "token_endpoint_auth_method {method} is not supported (use none, client_secret_post or client_secret_basic)"
            ),
        ));
    }
    let grant_types = req.grant_types.clone().unwrap_or_else(|| vec!["authorization_code".into()]);
    if let Some(g) = grant_types.iter().find(|g| !GRANT_TYPES.contains(&g.as_str())) {
        return Err(OAuthError::bad(
            "invalid_client_metadata",
            format!("grant type {g} is not supported (use authorization_code and refresh_token)"),
        ));
    }
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(OAuthError::bad("invalid_client_metadata", "grant_types must include authorization_code"));
    }
    if let Some(rt) = &req.response_types
        && rt.iter().any(|r| r != "code")
    {
        return Err(OAuthError::bad("invalid_client_metadata", "only the response type code is supported"));
    }
    // RFC 7591 §2 lets the server narrow the scope; refusing the registration
    // over a scope (clients often send `openid profile`) would fail the whole connection.
    let scope: Option<String> = req
        .scope
        .as_deref()
        .map(|sc| sc.split_whitespace().filter(|s| super::SCOPES.contains(s)).collect::<Vec<_>>().join(" "));
    let scope = scope.filter(|s| !s.is_empty());
    let name = req.client_name.as_deref().map(|n| n.trim().chars().take(100).collect::<String>());
    let client_id = format!("bmc_{}", Uuid::new_v4().simple());
    let secret = (method != "none").then(|| new_token("bmcs_"));
    let metadata = Value::Object(req.other.clone());
    let row: Client = diesel::insert_into(oauth_clients::table)
        .values((
            oauth_clients::id.eq(Uuid::now_v7()),
            oauth_clients::client_id.eq(&client_id),
            oauth_clients::client_secret_hash.eq(secret.as_deref().map(hash_token)),
            oauth_clients::client_name.eq(&name),
            oauth_clients::redirect_uris.eq(&req.redirect_uris),
            oauth_clients::grant_types.eq(&grant_types),
            oauth_clients::token_endpoint_auth_method.eq(&method),
            oauth_clients::scope.eq(&scope),
            oauth_clients::metadata.eq(&metadata),
        ))
        .returning(Client::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| OAuthError::Internal(AuthError::Db(e)))?;
    let mut resp = json!({
        "client_id": client_id,
        "client_id_issued_at": row.created_at.timestamp(),
        "redirect_uris": req.redirect_uris,
        "grant_types": grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    });
    if let Some(n) = &name {
        resp["client_name"] = json!(n);
    }
    if let Some(s) = &scope {
        resp["scope"] = json!(s);
    }
    if let Some(secret) = secret {
        resp["client_secret"] = json!(secret);
        resp["client_secret_expires_at"] = json!(0);
    }
    Ok((row, resp))
}

/// Client credentials presented at the token or revocation endpoint.
pub struct Presented {
    pub client_id: String,
    pub secret: Option<String>,
    pub method: &'static str,
}

/// Read the client's credentials from `Authorization: Basic` or the form.
pub fn presented_credentials(
    headers: &HeaderMap,
    form_client_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Presented, OAuthError> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(b64) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| OAuthError::client("the Basic authorization header is not valid base64"))?;
        let (id, secret) =
            decoded.split_once(':').ok_or_else(|| OAuthError::client("the Basic authorization header has no ':'"))?;
        // RFC 6749 §2.3.1: both parts are form-urlencoded.
        let dec =
            |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
        let id = dec(id).unwrap_or_default();
        if form_client_id.is_some_and(|f| f != id) {
            return Err(OAuthError::client("client_id in the form differs from the Basic authorization header"));
        }
        return Ok(Presented { client_id: id, secret: dec(secret), method: "client_secret_basic" });
    }
    let id = form_client_id.ok_or_else(|| OAuthError::client("client_id is missing"))?;
    match form_secret {
        Some(s) => Ok(Presented { client_id: id.to_owned(), secret: Some(s.to_owned()), method: "client_secret_post" }),
        None => Ok(Presented { client_id: id.to_owned(), secret: None, method: "none" }),
    }
}

/// Authenticate the client by its registered method.
pub async fn authenticate_client(conn: &mut AsyncPgConnection, p: &Presented) -> Result<Client, OAuthError> {
    let client = find_client(conn, &p.client_id)
        .await
        .map_err(OAuthError::Internal)?
        .ok_or_else(|| OAuthError::client(format!("unknown client {}; register again", p.client_id)))?;
    let registered = client.token_endpoint_auth_method.as_str();
    if registered == "none" {
        if p.method != "none" {
            // A public client that sends a secret anyway: tolerated only when it has none to check.
            tracing::debug!(client_id = %client.client_id, "public client presented credentials");
        }
        return Ok(client);
    }
    if p.method != registered {
        return Err(OAuthError::client(format!(
            "client registered for {registered} but authenticated with {}",
            p.method
        )));
    }
    let ok = match (&client.client_secret_hash, &p.secret) {
        (Some(h), Some(s)) => constant_time_eq(h, &hash_token(s)),
        _ => false,
    };
    if !ok {
        return Err(OAuthError::client("client secret is wrong"));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_kinds() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:33418/callback",
            "http://[::1]:5000/cb",
            "http://localhost:6274/oauth/callback",
            "http://localhost/cb",
            "cursor://anysphere.cursor-retrieval/oauth/user-abc/callback",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(validate_redirect_uri(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://evil.example/cb", "non-loopback"),
            ("javascript:alert(1)", "not allowed"),
            ("ms-msdt:/id", "reverse domain"),
            ("tel:+15555550100", "reverse domain"),
            ("intent://x#Intent;end", "fragment"),
            ("intent://scan/", "reverse domain"),
            ("x-app://cb", "reverse domain"),
            ("com..app:/cb", "reverse domain"),
            ("data:text/html,hi", "not allowed"),
            ("file:///etc/passwd", "not allowed"),
            ("https://app.example/cb#frag", "fragment"),
            ("/relative", "absolute"),
            ("http://127.0.0.1.evil.example/cb", "non-loopback"),
        ] {
            let e = validate_redirect_uri(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    fn client(uris: &[&str]) -> Client {
        Client {
            id: Uuid::nil(),
            client_id: "c".into(),
            client_secret_hash: None,
            client_name: None,
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            grant_types: vec!["authorization_code".into()],
            token_endpoint_auth_method: "none".into(),
            scope: None,
            metadata: json!({}),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn loopback_port_may_vary_but_nothing_else() {
        let c = client(&["http://127.0.0.1:1000/cb", "https://app.example/cb", "cursor://x/cb"]);
        assert!(c.match_redirect("http://127.0.0.1:5555/cb").is_some());
        assert!(c.match_redirect("https://app.example/cb").is_some());
        assert!(c.match_redirect("cursor://x/cb").is_some());
        assert!(c.match_redirect("http://127.0.0.1:5555/other").is_none());
        assert!(c.match_redirect("http://localhost:1000/cb").is_none());
        assert!(c.match_redirect("https://app.example:8443/cb").is_none());
        assert!(c.match_redirect("https://app.example/cb?x=1").is_none());
        assert!(c.match_redirect("http://evil.example/cb").is_none());
    }
}
