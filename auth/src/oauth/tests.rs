//! End-to-end tests of the authorization server and the sign-in pages: the
//! router served on 127.0.0.1, driven by reqwest with a cookie store, against
//! a real PostgreSQL database of its own.

use std::sync::Arc;

use bmm_core::crypto::pkce_s256;
use bmm_db::schema::{oauth_refresh_tokens, servers, sessions};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::keys::KeyStore;
use crate::keys::tests::{seed_test_key, test_config};
use crate::tokens::verify_access_token;
use crate::web::{AuthState, routes};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-some-more-entropy";
const CURSOR_CB: &str = "cursor://anysphere.cursor-retrieval/oauth/user-bmm/callback";
const LOOPBACK_CB: &str = "http://127.0.0.1:33418/callback";

struct Harness {
    db: bmm_db::testing::TestDb,
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
    keys: KeyStore,
    cfg: Arc<bmm_core::Config>,
}

impl Harness {
    async fn new() -> Harness {
        let db = bmm_db::testing::TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut cfg = (*test_config(&db, dir.path(), 3600)).clone();
        cfg.public_url = url::Url::parse(&base).unwrap();
        let cfg = Arc::new(cfg);
        seed_test_key(&db.pool(), &cfg).await;
        let keys = KeyStore::new(db.pool(), cfg.clone());
        let app = routes(AuthState::new(db.pool(), cfg.clone(), keys.clone()));
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
        });
        let http =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Harness { db, _dir: dir, base, http, keys, cfg }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn conn(&self) -> bmm_db::Conn {
        self.db.pool().get().await.unwrap()
    }

    /// Open a magic link as a browser does: the confirmation page, then its button.
    async fn open_link(&self, link: &str) -> reqwest::Response {
        let page = self.http.get(link).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "the link shows a confirmation page");
        let html = page.text().await.unwrap();
        // As Chromium sends it from a no-referrer page: `Origin: null`, same-origin fetch.
        self.http
            .post(self.url("/auth/verify"))
            .header("origin", "null")
            .header("sec-fetch-site", "same-origin")
            .form(&[("token", hidden_value(&html, "token"))])
            .send()
            .await
            .unwrap()
    }

    /// Sign in through a magic link; returns the user's org id.
    async fn sign_in(&self, email: &str) -> Uuid {
        let mut conn = self.conn().await;
        let link = crate::magic::create_magic_link(&mut conn, &self.cfg, email, None, None).await.unwrap();
        let resp = self.open_link(&link).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let (_, org) = crate::identity::ensure_user_and_org(&mut conn, email).await.unwrap();
        org.id
    }

    /// A live server of `org` at `{issuer}/s/{slug}/mcp`; returns its resource URL.
    async fn seed_server(&self, org: Uuid, slug: &str) -> String {
        let mut conn = self.conn().await;
        diesel::insert_into(servers::table)
            .values((
                servers::id.eq(Uuid::now_v7()),
                servers::org_id.eq(org),
                servers::slug.eq(slug),
                servers::name.eq(format!("Server {slug}")),
                servers::status.eq("LIVE"),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        self.cfg.server_url(slug)
    }

    async fn register(&self, body: Value) -> (StatusCode, Value) {
        let resp = self.http.post(self.url("/oauth/register")).json(&body).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    async fn register_public(&self) -> String {
        let (status, body) = self
            .register(json!({
                "client_name": "Test Client",
                "redirect_uris": [LOOPBACK_CB],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none"
            }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["client_id"].as_str().unwrap().to_owned()
    }

    fn authorize_params(&self, client_id: &str, resource: &str) -> Vec<(String, String)> {
        [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", LOOPBACK_CB),
            ("code_challenge", &pkce_s256(VERIFIER)),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
            ("resource", resource),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    async fn authorize_get(&self, params: &[(String, String)]) -> reqwest::Response {
        self.http.get(self.url("/oauth/authorize")).query(params).send().await.unwrap()
    }

    /// Show the consent page and approve; returns the redirect's query pairs.
    async fn approve(&self, params: &[(String, String)]) -> Vec<(String, String)> {
        let resp = self.authorize_get(params).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let html = resp.text().await.unwrap();
        let csrf = hidden_value(&html, "csrf");
        let mut form: Vec<(String, String)> = [
            "response_type",
            "client_id",
            "redirect_uri",
            "code_challenge",
            "code_challenge_method",
            "scope",
            "resource",
            "state",
        ]
        .iter()
        .map(|k| (k.to_string(), hidden_value(&html, k)))
        .collect();
        form.push(("csrf".into(), csrf));
        form.push(("decision".into(), "approve".into()));
        let resp = self.http.post(self.url("/oauth/authorize")).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        location_query(&resp)
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self.http.post(self.url("/oauth/token")).form(form).send().await.unwrap();
        assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
        (resp.status(), resp.json().await.unwrap())
    }

    async fn exchange(&self, client_id: &str, code: &str) -> (StatusCode, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", LOOPBACK_CB),
            ("code_verifier", VERIFIER),
            ("client_id", client_id),
        ])
        .await
    }

    async fn refresh(&self, client_id: &str, refresh: &str) -> (StatusCode, Value) {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client_id)]).await
    }

    /// Everything up to a code, for a fresh user with one server.
    async fn code_for(&self, email: &str, slug: &str) -> (String, String, String) {
        let org = self.sign_in(email).await;
        let resource = self.seed_server(org, slug).await;
        let client = self.register_public().await;
        let q = self.approve(&self.authorize_params(&client, &resource)).await;
        (client, get(&q, "code").unwrap(), resource)
    }
}

fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers().get("location").unwrap().to_str().unwrap().to_owned()
}

fn location_query(resp: &reqwest::Response) -> Vec<(String, String)> {
    let loc = location(resp);
    let u = url::Url::parse(&loc).unwrap();
    u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn get(q: &[(String, String)], k: &str) -> Option<String> {
    q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn full_flow_register_sign_in_consent_token_refresh_rotation() {
    let h = Harness::new().await;
    // Discovery.
    let meta: Value =
        h.http.get(h.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["issuer"], h.base);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["client_id_metadata_document_supported"], json!(true));
    assert_eq!(meta["token_endpoint"], format!("{}/oauth/token", h.base));
    // CORS for browser clients.
    let pre = h
        .http
        .request(reqwest::Method::OPTIONS, h.url("/oauth/token"))
        .header("origin", "https://inspector.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.headers().get("access-control-allow-origin").unwrap(), "*");

    let client = h.register_public().await;
    // Not signed in yet: sent to sign in, and back here afterwards.
    let mut conn = h.conn().await;
    let (_, org) = crate::identity::ensure_user_and_org(&mut conn, "flow@example.com").await.unwrap();
    let resource = h.seed_server(org.id, "weather").await;
    let params = h.authorize_params(&client, &resource);
    let resp = h.authorize_get(&params).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let to = location(&resp);
    assert!(to.starts_with("/auth/sign-in?next=%2Foauth%2Fauthorize%3F"), "{to}");
    // The sign-in form keeps `next`, and the link returns there.
    let next = url::form_urlencoded::parse(to.split_once('?').unwrap().1.as_bytes()).next().unwrap().1.into_owned();
    let link = crate::magic::create_magic_link(&mut conn, &h.cfg, "flow@example.com", Some(&next), None).await.unwrap();
    let resp = h.open_link(&link).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), next);
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("bmm_session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    // Consent names the client, the server and the scopes.
    let page = h.authorize_get(&params).await.text().await.unwrap();
    assert!(page.contains("Test Client") && page.contains("Server weather") && page.contains(&resource), "{page}");
    assert!(page.contains("Stay connected"));
    let q = h.approve(&params).await;
    assert_eq!(get(&q, "state").as_deref(), Some("xyz"));
    assert_eq!(get(&q, "iss").as_deref(), Some(h.base.as_str()));
    let code = get(&q, "code").unwrap();

    let (status, tok) = h.exchange(&client, &code).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["scope"], "mcp offline_access");
    let claims = verify_access_token(&h.keys, tok["access_token"].as_str().unwrap(), &resource).await.unwrap();
    assert_eq!(claims.aud, resource);
    assert_eq!(claims.org, org.id);
    assert_eq!(claims.client_id, client);
    let r1 = tok["refresh_token"].as_str().unwrap().to_owned();

    // Refresh rotates.
    let (status, tok2) = h.refresh(&client, &r1).await;
    assert_eq!(status, StatusCode::OK, "{tok2}");
    let r2 = tok2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert!(verify_access_token(&h.keys, tok2["access_token"].as_str().unwrap(), &resource).await.is_ok());
    let (status, tok3) = h.refresh(&client, &r2).await;
    assert_eq!(status, StatusCode::OK, "{tok3}");

    // The connection trace shows the steps for this server.
    let events = crate::trace::list(&mut conn, org.id, None, 50).await.unwrap();
    let steps: Vec<(&str, bool)> = events.iter().rev().map(|e| (e.step.as_str(), e.ok)).collect();
    assert_eq!(steps, vec![("authorize", true), ("token", true), ("token", true), ("token", true)]);
    assert!(events.iter().all(|e| e.client_name.as_deref() == Some("Test Client")));

    // The JWKS publishes the signing key.
    let jwks: Value = h.http.get(h.url("/oauth/jwks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        jwks["keys"][0]["kid"],
        jsonwebtoken::decode_header(tok["access_token"].as_str().unwrap()).unwrap().kid.unwrap()
    );
}

#[tokio::test]
async fn missing_pkce_is_refused() {
    let h = Harness::new().await;
    let org = h.sign_in("p@example.com").await;
    let resource = h.seed_server(org, "s1").await;
    let client = h.register_public().await;
    let params: Vec<_> =
        h.authorize_params(&client, &resource).into_iter().filter(|(k, _)| !k.starts_with("code_challenge")).collect();
    let resp = h.authorize_get(&params).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let q = location_query(&resp);
    assert!(location(&resp).starts_with(LOOPBACK_CB));
    assert_eq!(get(&q, "error").as_deref(), Some("invalid_request"));
    assert!(get(&q, "error_description").unwrap().contains("PKCE"));
    assert_eq!(get(&q, "state").as_deref(), Some("xyz"));
    // The server's owner sees why on the connection trace.
    let mut conn = h.conn().await;
    let events = crate::trace::list(&mut conn, org, None, 10).await.unwrap();
    assert!(
        events.iter().any(|e| e.step == "authorize"
            && !e.ok
            && e.detail.contains("PKCE")
            && e.client_name.as_deref() == Some("Test Client")
            && e.server_id.is_some()),
        "{events:?}"
    );
}

#[tokio::test]
async fn plain_pkce_is_refused() {
    let h = Harness::new().await;
    let org = h.sign_in("p@example.com").await;
    let resource = h.seed_server(org, "s1").await;
    let client = h.register_public().await;
    let mut params = h.authorize_params(&client, &resource);
    for (k, v) in params.iter_mut() {
        if k == "code_challenge_method" {
            *v = "plain".into();
        }
        if k == "code_challenge" {
            *v = VERIFIER[..43].into();
        }
    }
    let q = location_query(&h.authorize_get(&params).await);
    assert_eq!(get(&q, "error").as_deref(), Some("invalid_request"));
    assert!(get(&q, "error_description").unwrap().contains("plain is not allowed"));
}

#[tokio::test]
async fn wrong_verifier_is_refused() {
    let h = Harness::new().await;
    let (client, code, _) = h.code_for("v@example.com", "s1").await;
    let (status, body) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK_CB),
            ("code_verifier", "wrong-verifier-wrong-verifier-wrong-verifier-x"),
            ("client_id", &client),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "code_verifier does not match the code_challenge");
    // Whoever holds a leaked code without the verifier cannot burn it: the
    // client's own exchange still succeeds and nothing was revoked.
    let (status, tok) = h.exchange(&client, &code).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let (status, body) = h.refresh(&client, tok["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_leaked_code_presented_by_another_client_does_not_burn_it() {
    let h = Harness::new().await;
    let (client, code, _) = h.code_for("leak@example.com", "s1").await;
    let other = h.register_public().await;
    let (status, body) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK_CB),
            ("code_verifier", VERIFIER),
            ("client_id", &other),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_description"], "authorization code was issued to another client");
    let (status, tok) = h.exchange(&client, &code).await;
    assert_eq!(status, StatusCode::OK, "the code's own client still gets its tokens: {tok}");
}

/// Two uses of one refresh token at the same moment (a stolen copy and the
/// client's): one rotates, the other revokes the family, and the family
/// revoke covers the token the winner was issued, whichever of the two wins.
#[tokio::test]
async fn racing_refreshes_leave_no_live_token() {
    let h = Harness::new().await;
    for round in 0..5 {
        let (client, code, _) = h.code_for(&format!("race{round}@example.com"), &format!("race{round}")).await;
        let (_, tok) = h.exchange(&client, &code).await;
        let r1 = tok["refresh_token"].as_str().unwrap().to_owned();
        // Hold the token's row so both requests are inside the endpoint,
        // queued on the same lock, before either rotates.
        let mut lock = h.conn().await;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *lock, "BEGIN").await.unwrap();
        let _: Uuid = oauth_refresh_tokens::table
            .filter(oauth_refresh_tokens::token_hash.eq(bmm_core::crypto::hash_token(&r1)))
            .for_update()
            .select(oauth_refresh_tokens::family_id)
            .first(&mut *lock)
            .await
            .unwrap();
        let a = tokio::spawn({
            let (http, url, client, r1) = (h.http.clone(), h.url("/oauth/token"), client.clone(), r1.clone());
            async move { refresh_raw(&http, &url, &client, &r1).await }
        });
        let b = tokio::spawn({
            let (http, url, client, r1) = (h.http.clone(), h.url("/oauth/token"), client.clone(), r1.clone());
            async move { refresh_raw(&http, &url, &client, &r1).await }
        });
        let mut waiting = 0;
        for _ in 0..200 {
            let mut conn = h.conn().await;
            waiting = diesel::sql_query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            if waiting >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(waiting, 2, "both refreshes wait on the token's row");
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *lock, "COMMIT").await.unwrap();
        let mut outcomes = vec![a.await.unwrap(), b.await.unwrap()];
        outcomes.sort_by_key(|(status, _)| *status);
        assert_eq!(outcomes[0].0, StatusCode::OK, "{outcomes:?}");
        assert_eq!(outcomes[1].0, StatusCode::BAD_REQUEST, "{outcomes:?}");
        assert!(outcomes[1].1["error_description"].as_str().unwrap().contains("already used"));
        let r2 = outcomes[0].1["refresh_token"].as_str().unwrap().to_owned();
        let (status, body) = h.refresh(&client, &r2).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "round {round}: the winner's new token must be revoked: {body}");
    }
    let mut conn = h.conn().await;
    let live: i64 = oauth_refresh_tokens::table
        .filter(oauth_refresh_tokens::revoked_at.is_null())
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(live, 0);
}

async fn refresh_raw(http: &reqwest::Client, url: &str, client: &str, refresh: &str) -> (StatusCode, Value) {
    let resp = http
        .post(url)
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client)])
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn redirect_uri_mismatch_is_shown_not_redirected() {
    let h = Harness::new().await;
    let org = h.sign_in("r@example.com").await;
    let resource = h.seed_server(org, "s1").await;
    let client = h.register_public().await;
    let mut params = h.authorize_params(&client, &resource);
    for (k, v) in params.iter_mut() {
        if k == "redirect_uri" {
            *v = "https://evil.example/callback".into();
        }
    }
    let resp = h.authorize_get(&params).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("not one of the addresses it registered"));
    // A loopback redirect on another port is fine (RFC 8252).
    for (k, v) in params.iter_mut() {
        if k == "redirect_uri" {
            *v = "http://127.0.0.1:50123/callback".into();
        }
    }
    assert_eq!(h.authorize_get(&params).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn code_used_twice_fails_and_revokes_what_it_issued() {
    let h = Harness::new().await;
    let (client, code, _) = h.code_for("c@example.com", "s1").await;
    let (status, tok) = h.exchange(&client, &code).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.exchange(&client, &code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"].as_str().unwrap().contains("already used"));
    let (status, body) = h.refresh(&client, tok["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error_description"].as_str().unwrap().contains("revoked"), "{body}");
}

#[tokio::test]
async fn after_a_leak_every_refresh_token_and_signing_key_is_revoked() {
    let h = Harness::new().await;
    let (client, code, resource) = h.code_for("leak@example.com", "s1").await;
    let (_, tok) = h.exchange(&client, &code).await;
    let refresh = tok["refresh_token"].as_str().unwrap().to_owned();
    let access = tok["access_token"].as_str().unwrap().to_owned();
    verify_access_token(&h.keys, &access, &resource).await.expect("valid before the revocation");
    let mut conn = h.conn().await;
    assert_eq!(crate::incident::revoke_refresh_tokens(&mut conn).await.unwrap(), 1);
    assert_eq!(crate::incident::revoke_signing_keys(&mut conn).await.unwrap(), 1);
    let (status, body) = h.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    // A process that re-read the key table no longer accepts the old tokens.
    let fresh = KeyStore::without_jwks_file(h.db.pool(), h.cfg.clone());
    assert!(verify_access_token(&fresh, &access, &resource).await.is_err());
}

#[tokio::test]
async fn refresh_token_used_twice_revokes_the_family() {
    let h = Harness::new().await;
    let (client, code, _) = h.code_for("f@example.com", "s1").await;
    let (_, tok) = h.exchange(&client, &code).await;
    let r1 = tok["refresh_token"].as_str().unwrap().to_owned();
    let (status, tok2) = h.refresh(&client, &r1).await;
    assert_eq!(status, StatusCode::OK);
    let r2 = tok2["refresh_token"].as_str().unwrap().to_owned();
    // Replay of the used token: refused, and the whole family is revoked.
    let (status, body) = h.refresh(&client, &r1).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error_description"].as_str().unwrap().contains("already used"));
    let (status, body) = h.refresh(&client, &r2).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the newer token must be dead too: {body}");
    let mut conn = h.conn().await;
    let live: i64 = oauth_refresh_tokens::table
        .filter(oauth_refresh_tokens::revoked_at.is_null())
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(live, 0);
}

#[tokio::test]
async fn unknown_resource_is_refused() {
    let h = Harness::new().await;
    let org = h.sign_in("u@example.com").await;
    h.seed_server(org, "real").await;
    let client = h.register_public().await;
    let missing = h.cfg.server_url("missing");
    let q = location_query(&h.authorize_get(&h.authorize_params(&client, &missing)).await);
    assert_eq!(get(&q, "error").as_deref(), Some("invalid_target"));
    // Not a server URL at all.
    let q = location_query(&h.authorize_get(&h.authorize_params(&client, "https://elsewhere.example/mcp")).await);
    assert_eq!(get(&q, "error").as_deref(), Some("invalid_target"));
    // A deleted server is gone.
    let deleted = h.seed_server(org, "gone").await;
    let mut conn = h.conn().await;
    diesel::update(servers::table.filter(servers::slug.eq("gone")))
        .set((servers::status.eq("DELETED"), servers::deleted_at.eq(diesel::dsl::now)))
        .execute(&mut conn)
        .await
        .unwrap();
    let q = location_query(&h.authorize_get(&h.authorize_params(&client, &deleted)).await);
    assert_eq!(get(&q, "error").as_deref(), Some("invalid_target"));
}

#[tokio::test]
async fn another_orgs_server_is_refused_as_resource() {
    let h = Harness::new().await;
    let mut conn = h.conn().await;
    let (_, other) = crate::identity::ensure_user_and_org(&mut conn, "owner@other.example").await.unwrap();
    let theirs = h.seed_server(other.id, "theirs").await;
    h.sign_in("me@example.com").await;
    let client = h.register_public().await;
    let q = location_query(&h.authorize_get(&h.authorize_params(&client, &theirs)).await);
    assert_eq!(get(&q, "error").as_deref(), Some("invalid_target"));
    assert!(get(&q, "error_description").unwrap().contains("in your organisation"));
}

#[tokio::test]
async fn resource_at_token_must_match() {
    let h = Harness::new().await;
    let (client, code, _) = h.code_for("t@example.com", "s1").await;
    let other = h.cfg.server_url("s2");
    let (status, body) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK_CB),
            ("code_verifier", VERIFIER),
            ("client_id", &client),
            ("resource", &other),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_target");
}

#[tokio::test]
async fn deny_and_missing_csrf() {
    let h = Harness::new().await;
    let org = h.sign_in("d@example.com").await;
    let resource = h.seed_server(org, "s1").await;
    let client = h.register_public().await;
    let params = h.authorize_params(&client, &resource);
    let html = h.authorize_get(&params).await.text().await.unwrap();
    let mut form: Vec<(String, String)> = params.clone();
    form.push(("scope".into(), hidden_value(&html, "scope")));
    form.push(("decision".into(), "approve".into()));
    // No CSRF token: refused.
    let resp = h.http.post(h.url("/oauth/authorize")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    form.push(("csrf".into(), hidden_value(&html, "csrf")));
    form.retain(|(k, _)| k != "decision");
    form.push(("decision".into(), "deny".into()));
    let resp = h.http.post(h.url("/oauth/authorize")).form(&form).send().await.unwrap();
    let q = location_query(&resp);
    assert_eq!(get(&q, "error").as_deref(), Some("access_denied"));
}

#[tokio::test]
async fn registration_accepts_cursors_mixed_redirect_uris_and_refuses_bad_ones() {
    let h = Harness::new().await;
    let body = json!({
        "client_name": "Cursor",
        "redirect_uris": ["https://cursor.com/oauth/callback", "http://127.0.0.1:6274/oauth/callback", CURSOR_CB],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]
    });
    let (status, first) = h.register(body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(first.get("client_secret").is_none());
    // Registering again is fine and makes a new client.
    let (status, second) = h.register(body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(first["client_id"], second["client_id"]);
    for bad in ["http://evil.example/cb", "javascript:alert(1)"] {
        let (status, err) = h
            .register(json!({"redirect_uris": ["https://ok.example/cb", bad], "token_endpoint_auth_method": "none"}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(err["error"], "invalid_redirect_uri", "{bad}");
    }
    let (status, err) = h.register(json!({"redirect_uris": []})).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_redirect_uri")));
    let (status, err) =
        h.register(json!({"redirect_uris": [LOOPBACK_CB], "token_endpoint_auth_method": "private_key_jwt"})).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_client_metadata")));
    // Unsupported scopes are dropped from the registration, not refused.
    let (status, reg) = h.register(json!({"redirect_uris": [LOOPBACK_CB], "scope": "openid mcp profile"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reg["scope"], "mcp");
    let resp = h.http.post(h.url("/oauth/register")).body("not json").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

/// Consent phishing: a client registered as "Claude" with an attacker's
/// redirect. The page leads with where access goes, says the app is
/// unverified, and Allow is neither focused nor usable in the first moment.
#[tokio::test]
async fn consent_page_leads_with_the_redirect_host_and_marks_the_app_unverified() {
    let h = Harness::new().await;
    let org = h.sign_in("phish@example.com").await;
    let resource = h.seed_server(org, "s1").await;
    let (status, reg) = h
        .register(json!({"client_name": "Claude", "redirect_uris": ["https://claude.evil.example/cb"], "token_endpoint_auth_method": "none"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let params: Vec<(String, String)> = h
        .authorize_params(reg["client_id"].as_str().unwrap(), &resource)
        .into_iter()
        .map(|(k, v)| if k == "redirect_uri" { (k, "https://claude.evil.example/cb".into()) } else { (k, v) })
        .collect();
    let resp = h.authorize_get(&params).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    let host_at = page.find("id=\"return-host\">claude.evil.example<").expect("the redirect host is shown");
    let form_at = page.find("<form").unwrap();
    assert!(host_at < form_at && host_at < page.find("<dl>").unwrap(), "the host comes first: {page}");
    assert!(page.contains("Unverified app") && page.contains(">unverified<"), "{page}");
    assert!(!page.contains("autofocus"), "Allow must not be focused: {page}");
    assert!(page.contains("value=\"approve\" class=\"arm-later\""), "{page}");
    let css = h.http.get(h.url("/auth/style.css")).send().await.unwrap().text().await.unwrap();
    assert!(css.contains(".arm-later { animation: bmm-arm 0s linear 1s both; }"), "{css}");
}

/// Custom-scheme redirects are allowed by rule (reverse-domain, RFC 8252),
/// not by a deny-list: schemes that launch other handlers are refused.
#[tokio::test]
async fn custom_scheme_redirects_must_be_reverse_domain_names() {
    let h = Harness::new().await;
    for bad in ["ms-msdt:/id?PCWDiagnostic", "tel:+15555550100", "intent://scan/", "mailto:a@b.example", "x-app://cb"] {
        let (status, err) = h.register(json!({"redirect_uris": [bad], "token_endpoint_auth_method": "none"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["error"], "invalid_redirect_uri", "{bad}");
        assert!(err["error_description"].as_str().unwrap().contains("reverse domain"), "{err}");
    }
    for ok in ["com.example.app:/oauth2redirect", "dev.zed.app://cb", CURSOR_CB] {
        let (status, reg) = h.register(json!({"redirect_uris": [ok], "token_endpoint_auth_method": "none"})).await;
        assert_eq!(status, StatusCode::CREATED, "{ok}: {reg}");
    }
}

/// RFC 9700 §4.11.2: an error is not sent automatically to an https
/// redirect a registrant chose (open redirect), before or after sign-in.
#[tokio::test]
async fn authorize_errors_are_shown_not_redirected_to_untrusted_sites() {
    let h = Harness::new().await;
    let mut conn = h.conn().await;
    let (_, org) = crate::identity::ensure_user_and_org(&mut conn, "or@example.com").await.unwrap();
    let resource = h.seed_server(org.id, "s1").await;
    let (status, reg) = h
        .register(json!({"client_name": "Evil", "redirect_uris": ["https://evil.example/land"], "token_endpoint_auth_method": "none"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let client = reg["client_id"].as_str().unwrap();
    let params: Vec<(String, String)> = h
        .authorize_params(client, &resource)
        .into_iter()
        .map(|(k, v)| if k == "redirect_uri" { (k, "https://evil.example/land".into()) } else { (k, v) })
        .filter(|(k, _)| k != "code_challenge")
        .collect();
    for signed_in in [false, true] {
        if signed_in {
            h.sign_in("or@example.com").await;
        }
        let resp = h.authorize_get(&params).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "signed in: {signed_in}");
        assert!(resp.headers().get("location").is_none(), "signed in: {signed_in}");
        let page = resp.text().await.unwrap();
        assert!(page.contains("evil.example") && page.contains("PKCE"), "{page}");
    }
}

#[tokio::test]
async fn confidential_clients_authenticate_by_their_method() {
    let h = Harness::new().await;
    let org = h.sign_in("cc@example.com").await;
    let resource = h.seed_server(org, "s1").await;
    let (status, reg) = h
        .register(json!({"client_name": "Server app", "redirect_uris": [LOOPBACK_CB], "grant_types": ["authorization_code", "refresh_token"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_basic");
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let secret = reg["client_secret"].as_str().unwrap().to_owned();
    let code = get(&h.approve(&h.authorize_params(&id, &resource)).await, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", LOOPBACK_CB),
        ("code_verifier", VERIFIER),
    ];
    // Wrong secret: 401 invalid_client (the code stays usable).
    let resp = h.http.post(h.url("/oauth/token")).basic_auth(&id, Some("nope")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("www-authenticate").unwrap().to_str().unwrap().starts_with("Basic"));
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_client");
    // Secret in the form although registered for Basic: refused.
    let mut post_form = form.to_vec();
    post_form.push(("client_id", &id));
    post_form.push(("client_secret", &secret));
    let resp = h.http.post(h.url("/oauth/token")).form(&post_form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = h.http.post(h.url("/oauth/token")).basic_auth(&id, Some(&secret)).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tok: Value = resp.json().await.unwrap();
    // Revocation revokes the refresh token's family.
    let refresh = tok["refresh_token"].as_str().unwrap();
    let resp = h
        .http
        .post(h.url("/oauth/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn client_metadata_urls_on_loopback_or_http_are_refused() {
    let h = Harness::new().await;
    let org = h.sign_in("m@example.com").await;
    let resource = h.seed_server(org, "s1").await;
    for client_id in [
        format!("{}/client.json", h.base),
        "https://127.0.0.1/client.json".to_owned(),
        "https://localhost:9/c.json".to_owned(),
    ] {
        let resp = h.authorize_get(&h.authorize_params(&client_id, &resource)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{client_id}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("https") || text.contains("non-public"), "{client_id}: {text}");
    }
}

#[tokio::test]
async fn sign_in_page_never_reveals_whether_the_email_is_known() {
    let h = Harness::new().await;
    let mut conn = h.conn().await;
    crate::identity::ensure_user_and_org(&mut conn, "known@example.com").await.unwrap();
    let form = h.http.get(h.url("/auth/sign-in")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("<label for=\"email\">Email address</label>"));
    let post = |email: &'static str| {
        let h = &h;
        async move { h.http.post(h.url("/auth/sign-in")).form(&[("email", email)]).send().await.unwrap() }
    };
    let a = post("known@example.com").await;
    let b = post("unknown@example.com").await;
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(b.status(), StatusCode::OK);
    let (ta, tb) = (a.text().await.unwrap(), b.text().await.unwrap());
    assert_eq!(ta.replace("known@", "X@"), tb.replace("unknown@", "X@"));
    let bad = post("not an email").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("role=\"alert\""));
    // The form carries `next` through to the link.
    let resp = h
        .http
        .post(h.url("/auth/sign-in"))
        .form(&[("email", "next@example.com"), ("next", "/oauth/authorize?client_id=x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let next: Option<String> = bmm_db::schema::magic_links::table
        .filter(bmm_db::schema::magic_links::email.eq("next@example.com"))
        .select(bmm_db::schema::magic_links::redirect_to)
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(next.as_deref(), Some("/oauth/authorize?client_id=x"));
    let css = h.http.get(h.url("/auth/style.css")).send().await.unwrap();
    assert_eq!(css.headers().get("content-type").unwrap(), "text/css; charset=utf-8");
}

#[tokio::test]
async fn magic_link_used_twice_and_sign_out_revokes_the_session() {
    let h = Harness::new().await;
    let mut conn = h.conn().await;
    let link =
        crate::magic::create_magic_link(&mut conn, &h.cfg, "twice@example.com", Some("https://evil.example/"), None)
            .await
            .unwrap();
    let first = h.open_link(&link).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    // An off-site `next` was dropped.
    assert_eq!(location(&first), "/");
    let second = h.http.get(&link).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);
    assert!(second.text().await.unwrap().contains("already used"));
    let resp = h.http.post(h.url("/auth/sign-out")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let revoked: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        sessions::table.select(sessions::revoked_at).load(&mut conn).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0].is_some());
}

/// Mail scanners and login CSRF: opening a link only shows a confirmation
/// (the link still works after any number of GETs); the POST signs in, and
/// not from another site's form; a link asked for from one browser says so
/// when it is opened in another.
#[tokio::test]
async fn magic_link_get_only_confirms_and_the_post_signs_in() {
    let h = Harness::new().await;
    let mut conn = h.conn().await;
    let link = crate::magic::create_magic_link(&mut conn, &h.cfg, "scan@example.com", None, None).await.unwrap();
    let scanner = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..3 {
        let resp = scanner.get(&link).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("set-cookie").is_none(), "a GET never signs in");
        let html = resp.text().await.unwrap();
        assert!(html.contains("Sign in as scan@example.com?") && html.contains("method=\"post\""), "{html}");
        assert!(!html.contains("opened-elsewhere"), "a CLI link is bound to no browser: {html}");
    }
    let token = link.split("token=").nth(1).unwrap().to_owned();
    // Another site's auto-submitting form is refused, and does not use the link.
    let resp = h
        .http
        .post(h.url("/auth/verify"))
        .header("origin", "https://attacker.example")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = h
        .http
        .post(h.url("/auth/verify"))
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = h.open_link(&link).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(resp.headers().get("set-cookie").unwrap().to_str().unwrap().starts_with("bmm_session="));

    // The sign-in form marks the asking browser and binds the link to it.
    let resp = scanner.post(h.url("/auth/sign-in")).form(&[("email", "bound@example.com")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    let value = set.strip_prefix("bmm_signin=").and_then(|v| v.split(';').next()).expect("a bmm_signin cookie");
    assert!(set.contains("HttpOnly") && set.contains("Path=/auth/"), "{set}");
    let bound: Option<Vec<u8>> = bmm_db::schema::magic_links::table
        .filter(bmm_db::schema::magic_links::email.eq("bound@example.com"))
        .select(bmm_db::schema::magic_links::browser_hash)
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(bound, Some(bmm_core::crypto::hash_token(value)));
    // Opened in another browser, the page says so; in the asking one it does not.
    let browser = "browser-marker-value-of-the-asking-browser";
    let link = crate::magic::create_bound_magic_link(&mut conn, &h.cfg, "bound@example.com", None, None, Some(browser))
        .await
        .unwrap();
    let elsewhere = scanner.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(elsewhere.contains("id=\"opened-elsewhere\""), "{elsewhere}");
    let same = scanner
        .get(&link)
        .header("cookie", format!("bmm_signin={browser}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!same.contains("opened-elsewhere"), "{same}");
}
