//! Client ID metadata documents: a client whose `client_id` is an https URL
//! is described by the JSON document at that URL.
//!
//! Fetching a URL a stranger chose is a server-side request forgery risk, so:
//! https only, no credentials in the URL, the host is resolved first and every
//! address must be public (no loopback, private, link-local, …), the
//! connection goes to exactly those checked addresses, no redirects, no
//! proxy, 5 seconds, at most 64 KB.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bmm_db::schema::oauth_clients;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use url::{Host, Url};
use uuid::Uuid;

use super::OAuthError;
use super::clients::{Client, validate_redirect_uri};

pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `client_id` is meant as a metadata document URL.
pub fn is_metadata_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// Check the URL's form: https, a host, a path, no credentials or fragment.
pub fn check_url(raw: &str) -> Result<Url, String> {
    let u = Url::parse(raw).map_err(|e| format!("client_id {raw} is not a valid URL ({e})"))?;
    if u.scheme() != "https" {
        return Err(format!("client metadata document {raw} must be fetched over https"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("client_id {raw} must not contain credentials"));
    }
    if u.fragment().is_some() {
        return Err(format!("client_id {raw} must not contain a fragment"));
    }
    if u.host().is_none() {
        return Err(format!("client_id {raw} has no host"));
    }
    if u.path() == "/" || u.path().is_empty() {
        return Err(format!("client_id {raw} must have a path"));
    }
    Ok(u)
}

/// Whether an address is on the public internet (so fetching it cannot reach
/// the platform's own network).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(
                v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 reaches IPv4, possibly private
                || s[0] == 0
                // IPv4-compatible and other reserved ::/8
            )
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240)
}

/// Resolve the URL's host; refuse if any address is not public.
async fn resolve_public(u: &Url) -> Result<Vec<SocketAddr>, String> {
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match u.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(d)) => tokio::time::timeout(FETCH_TIMEOUT, tokio::net::lookup_host((d, port)))
            .await
            .map_err(|_| format!("resolving {d} timed out"))?
            .map_err(|e| format!("cannot resolve {d}: {e}"))?
            .collect(),
        None => return Err("no host".into()),
    };
    if addrs.is_empty() {
        return Err("the host has no addresses".into());
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public_ip(a.ip())) {
        return Err(format!(
            "client metadata document host {} resolves to a non-public address ({}); refused",
            u.host_str().unwrap_or_default(),
            bad.ip()
        ));
    }
    Ok(addrs)
}

/// Fetch and parse the document at `raw` under the rules above.
pub async fn fetch_document(raw: &str) -> Result<Value, String> {
    let u = check_url(raw)?;
    let addrs = resolve_public(&u).await?;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .user_agent("BuildMyMCP/1 (client metadata fetcher)");
    if let Some(Host::Domain(d)) = u.host() {
        // Connect only to the addresses checked above (no second lookup to rebind).
        builder = builder.resolve_to_addrs(d, &addrs);
    }
    let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
    let mut resp = client
        .get(u.clone())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("fetching {raw} failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("fetching {raw} answered HTTP {}", resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n as usize > MAX_DOCUMENT_BYTES) {
        return Err(format!("client metadata document {raw} is larger than 64 KB"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading {raw} failed: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("client metadata document {raw} is larger than 64 KB"));
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("client metadata document {raw} is not JSON ({e})"))
}

/// Validate a fetched document and store it as the client row (refreshed on
/// each authorization, so the token endpoint can find the client).
pub async fn load_client(conn: &mut AsyncPgConnection, client_id: &str) -> Result<Client, OAuthError> {
    let doc = fetch_document(client_id).await.map_err(|m| OAuthError::bad("invalid_client", m))?;
    let bad = |m: String| OAuthError::bad("invalid_client_metadata", m);
    if doc.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(bad(format!("client metadata document's client_id must be its own URL {client_id}")));
    }
    let redirect_uris: Vec<String> = doc
        .get("redirect_uris")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(bad("client metadata document lists no redirect_uris".into()));
    }
    for r in &redirect_uris {
        validate_redirect_uri(r).map_err(bad)?;
    }
    let method = doc.get("token_endpoint_auth_method").and_then(Value::as_str).unwrap_or("none");
    if method != "none" {
        return Err(bad(format!(
            "token_endpoint_auth_method {method} is not supported for metadata-document clients (use none)"
        )));
    }
    let name: Option<String> =
        doc.get("client_name").and_then(Value::as_str).map(|n| n.trim().chars().take(100).collect());
    let grant_types: Vec<String> = doc
        .get("grant_types")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    let row: Client = diesel::insert_into(oauth_clients::table)
        .values((
            oauth_clients::id.eq(Uuid::now_v7()),
            oauth_clients::client_id.eq(client_id),
            oauth_clients::client_name.eq(&name),
            oauth_clients::redirect_uris.eq(&redirect_uris),
            oauth_clients::grant_types.eq(&grant_types),
            oauth_clients::token_endpoint_auth_method.eq("none"),
            oauth_clients::metadata.eq(&doc),
        ))
        .on_conflict(oauth_clients::client_id)
        .do_update()
        .set((
            oauth_clients::client_name.eq(excluded(oauth_clients::client_name)),
            oauth_clients::redirect_uris.eq(excluded(oauth_clients::redirect_uris)),
            oauth_clients::grant_types.eq(excluded(oauth_clients::grant_types)),
            oauth_clients::metadata.eq(excluded(oauth_clients::metadata)),
        ))
        .returning(Client::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| OAuthError::Internal(e.into()))?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn http_urls_are_refused_without_fetching() {
        let e = fetch_document("http://client.example/oauth/metadata.json").await.unwrap_err();
        assert!(e.contains("https"), "{e}");
    }

    #[tokio::test]
    async fn loopback_and_private_hosts_are_refused() {
        for url in [
            "https://127.0.0.1/client.json",
            "https://127.0.0.1:8443/client.json",
            "https://[::1]/client.json",
            "https://localhost/client.json",
            "https://10.0.0.5/client.json",
            "https://169.254.169.254/latest/meta-data",
        ] {
            let e = fetch_document(url).await.unwrap_err();
            assert!(e.contains("non-public address"), "{url}: {e}");
        }
    }

    #[test]
    fn malformed_urls_are_refused() {
        assert!(check_url("https://user:pw@client.example/c.json").unwrap_err().contains("credentials"));
        assert!(check_url("https://client.example/").unwrap_err().contains("path"));
        assert!(check_url("https://client.example/c.json#x").unwrap_err().contains("fragment"));
        assert!(check_url("https://client.example/c.json").is_ok());
    }
}
