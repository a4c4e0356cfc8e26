//! `/oauth/authorize`: authorization code with PKCE S256 only. The user signs
//! in if needed, then approves or denies on a consent page naming the client,
//! the server and the scopes.
//!
//! Errors about the client or its redirect URI are shown as a page (sending
//! them to an unverified URI would make us an open redirector); all others go
//! back to the client's redirect URI.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bmm_core::crypto::{b64url, constant_time_eq, hash_token, new_token};
use bmm_db::schema::oauth_codes;
use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use super::clients::{Client, find_client};
use super::{OAuthError, ResourceServer, SCOPES, cimd, find_resource};
use crate::pages::{error_page, esc, page};
use crate::principal::{self, Principal};
use crate::trace;
use crate::web::{AuthState, internal};

/// Authorization codes live this long.
pub const CODE_TTL: Duration = Duration::minutes(2);

#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    // Consent form only.
    pub csrf: Option<String>,
    pub decision: Option<String>,
}

/// A request that passed every check that does not need the user.
struct Checked {
    client: Client,
    redirect_uri: String,
    challenge: String,
    scope: String,
    resource: String,
    state: Option<String>,
}

enum Refusal {
    /// Shown to the user; the client cannot be trusted with it.
    Page(String),
    /// Sent back to the client's (verified) redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        code: &'static str,
        description: String,
    },
    Internal(crate::AuthError),
}

impl Refusal {
    fn cause(&self) -> String {
        match self {
            Refusal::Page(m) => m.clone(),
            Refusal::Redirect { code, description, .. } => format!("{code}: {description}"),
            Refusal::Internal(_) => "server error".into(),
        }
    }
}

fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let mut u = Url::parse(redirect_uri).expect("registered redirect URIs are valid URLs");
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Redirect::to(u.as_str()).into_response()
}

/// Whether an error may be sent to `redirect_uri` without asking the user
/// (RFC 9700 §4.11.2). Every client registers itself, so an https redirect
/// is whatever site the registrant chose: sending people there from our
/// origin would make us an open redirector. A loopback address or an app's
/// own scheme lands on the user's machine, never on someone else's website.
fn trusted_redirect(redirect_uri: &str) -> bool {
    match Url::parse(redirect_uri) {
        Ok(u) => match u.scheme() {
            "https" => false,
            "http" => super::clients::is_loopback_host(&u),
            _ => true,
        },
        Err(_) => false,
    }
}

fn error_redirect(st: &AuthState, redirect_uri: &str, state: Option<&str>, code: &str, description: &str) -> Response {
    let iss = st.cfg.issuer();
    let mut pairs = vec![("error", code), ("error_description", description), ("iss", iss.as_str())];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    redirect_with(redirect_uri, &pairs)
}

fn refuse(st: &AuthState, r: Refusal) -> Response {
    match r {
        Refusal::Page(m) => error_page(StatusCode::BAD_REQUEST, "Cannot connect this app", &m),
        Refusal::Redirect { redirect_uri, state, code, description } if trusted_redirect(&redirect_uri) => {
            error_redirect(st, &redirect_uri, state.as_deref(), code, &description)
        }
        Refusal::Redirect { redirect_uri, code, description, .. } => {
            // Shown here, with where the app wanted to go, instead of an
            // automatic redirect to a site nobody vetted.
            let host = Url::parse(&redirect_uri).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
            error_page(
                StatusCode::BAD_REQUEST,
                "Cannot connect this app",
                &format!("The app (returning to {host}) made a request that cannot be granted: {code}: {description}"),
            )
        }
        Refusal::Internal(e) => internal(&e),
    }
}

async fn check(conn: &mut AsyncPgConnection, st: &AuthState, p: &AuthorizeParams) -> Result<Checked, Refusal> {
    let client_id = p.client_id.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
        Refusal::Page("The app did not say who it is (client_id is missing). Try connecting again.".into())
    })?;
    let client = if cimd::is_metadata_url(client_id) {
        cimd::load_client(conn, client_id).await.map_err(|e| match e {
            OAuthError::Internal(e) => Refusal::Internal(e),
            other => Refusal::Page(format!("The app's description could not be used: {}", other.cause())),
        })?
    } else {
        find_client(conn, client_id).await.map_err(Refusal::Internal)?.ok_or_else(|| {
            Refusal::Page(format!(
                "This app (client {client_id}) is not registered here. Remove the server from the app and add it again."
            ))
        })?
    };
    let redirect_uri = match p.redirect_uri.as_deref() {
        Some(r) => client.match_redirect(r).ok_or_else(|| {
            Refusal::Page(format!("The app asked to return to {r}, which is not one of the addresses it registered."))
        })?,
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return Err(Refusal::Page("The app did not say where to return to (redirect_uri is missing).".into())),
    };
    let state = p.state.clone();
    let fail = |code: &'static str, description: String| Refusal::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        code,
        description,
    };
    match p.response_type.as_deref() {
        Some("code") => {}
        other => {
            return Err(fail(
                "unsupported_response_type",
                format!("response_type must be code (got {})", other.unwrap_or("nothing")),
            ));
        }
    }
    let challenge = p
        .code_challenge
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| fail("invalid_request", "code_challenge is required: PKCE with S256 must be used".into()))?;
    match p.code_challenge_method.as_deref() {
        Some("S256") => {}
        Some(m) => return Err(fail("invalid_request", format!("code_challenge_method {m} is not allowed; use S256"))),
        // RFC 7636 makes a missing method mean `plain`.
        None => return Err(fail("invalid_request", "code_challenge_method is missing; use S256".into())),
    }
    if challenge.len() != 43 || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(fail("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)".into()));
    }
    let scope = granted_scope(&client, p.scope.as_deref()).map_err(|m| fail("invalid_scope", m))?;
    let resource = p.resource.clone().filter(|r| !r.is_empty()).ok_or_else(|| {
        fail("invalid_target", "resource is required: the MCP server URL the token is for (RFC 8707)".into())
    })?;
    if let Err(m) = super::resource_slug(&st.cfg, &resource) {
        return Err(fail("invalid_target", m));
    }
    Ok(Checked { client, redirect_uri, challenge, scope, resource, state })
}

/// The scopes to grant: those asked for (all known), always with `mcp`;
/// with no scope asked, `mcp` plus `offline_access` for clients registered for refresh.
fn granted_scope(client: &Client, requested: Option<&str>) -> Result<String, String> {
    let mut out: Vec<&str> = vec!["mcp"];
    match requested.map(str::trim).filter(|s| !s.is_empty()) {
        Some(req) => {
            for s in req.split_whitespace() {
                if !SCOPES.contains(&s) {
                    return Err(format!("scope {s} is not supported (use mcp and offline_access)"));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        None if client.may_refresh() => out.push("offline_access"),
        None => {}
    }
    Ok(out.join(" "))
}

/// The CSRF token of the consent form: bound to the session, unknowable without its cookie.
pub(crate) fn csrf_token(session_token: &str) -> String {
    b64url(&Sha256::digest(format!("bmm-consent-csrf\0{session_token}").as_bytes()))
}

/// The signed-in user for the server: their session token and principal.
async fn signed_in(conn: &mut AsyncPgConnection, headers: &HeaderMap) -> Option<(String, Principal)> {
    let token = principal::session_token_from_headers(headers)?;
    let p = principal::authenticate_session(conn, &token).await.ok()?;
    Some((token, p))
}

/// The server at the resource, if it is one of the user's org's.
async fn user_server(
    conn: &mut AsyncPgConnection,
    st: &AuthState,
    c: &Checked,
    user: &Principal,
) -> Result<ResourceServer, Refusal> {
    let found = find_resource(conn, &st.cfg, &c.resource).await.map_err(Refusal::Internal)?;
    match found {
        Ok(s) if s.org_id == user.org_id => Ok(s),
        // Another org's server is reported exactly like a missing one.
        _ => Err(Refusal::Redirect {
            redirect_uri: c.redirect_uri.clone(),
            state: c.state.clone(),
            code: "invalid_target",
            description: format!("there is no server at {} in your organisation", c.resource),
        }),
    }
}

/// Record a refusal on the trace of the server the request named (if it
/// names one), so its owner sees why a client could not connect.
/// Record a refusal in the connection trace, then answer it.
async fn refuse_traced(conn: &mut AsyncPgConnection, st: &AuthState, p: &AuthorizeParams, r: Refusal) -> Response {
    trace_refusal(conn, st, p, &r).await;
    refuse(st, r)
}

async fn trace_refusal(conn: &mut AsyncPgConnection, st: &AuthState, p: &AuthorizeParams, r: &Refusal) {
    let server = match p.resource.as_deref() {
        Some(res) => find_resource(conn, &st.cfg, res).await.ok().and_then(Result::ok),
        None => None,
    };
    let name = match p.client_id.as_deref() {
        Some(id) => find_client(conn, id).await.ok().flatten().map(|c| c.display_name().to_owned()),
        None => None,
    };
    trace::record(
        conn,
        server.as_ref().map(|s| s.org_id),
        server.as_ref().map(|s| s.id),
        p.client_id.as_deref(),
        name.as_deref(),
        "authorize",
        false,
        &r.cause(),
    )
    .await;
}

pub(super) async fn authorize_get(
    State(st): State<AuthState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    query: Result<axum::extract::Query<AuthorizeParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(p)) = query else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Cannot connect this app",
            "The app's request is malformed (a parameter is repeated or unreadable). Try connecting again.",
        );
    };
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return internal(&e),
    };
    let c = match check(&mut conn, &st, &p).await {
        Ok(c) => c,
        Err(r) => {
            return refuse_traced(&mut conn, &st, &p, r).await;
        }
    };
    let Some((session_token, user)) = signed_in(&mut conn, &headers).await else {
        let back = format!("/oauth/authorize?{}", raw.unwrap_or_default());
        let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
        return Redirect::to(&format!("/auth/sign-in?next={next}")).into_response();
    };
    let server = match user_server(&mut conn, &st, &c, &user).await {
        Ok(s) => s,
        Err(r) => {
            return refuse_traced(&mut conn, &st, &p, r).await;
        }
    };
    consent_page(&c, &server, &user, &csrf_token(&session_token))
}

fn consent_page(c: &Checked, server: &ResourceServer, user: &Principal, csrf: &str) -> Response {
    let hidden = |name: &str, value: &str| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", esc(value));
    let mut fields = String::new();
    fields += &hidden("response_type", "code");
    fields += &hidden("client_id", &c.client.client_id);
    fields += &hidden("redirect_uri", &c.redirect_uri);
    fields += &hidden("code_challenge", &c.challenge);
    fields += &hidden("code_challenge_method", "S256");
    fields += &hidden("scope", &c.scope);
    fields += &hidden("resource", &c.resource);
    if let Some(s) = &c.state {
        fields += &hidden("state", s);
    }
    fields += &hidden("csrf", csrf);
    let scopes: String = c
        .scope
        .split(' ')
        .map(|s| match s {
            "mcp" => "<li>Use this server's tools as you</li>".to_owned(),
            "offline_access" => "<li>Stay connected without asking again (until you revoke it)</li>".to_owned(),
            other => format!("<li>{}</li>", esc(other)),
        })
        .collect();
    let return_to = Url::parse(&c.redirect_uri).ok().map(|u| match u.host_str() {
        Some(h) if u.scheme() == "http" || u.scheme() == "https" => h.to_owned(),
        Some(h) => format!("{}://{h}", u.scheme()),
        None => format!("the app {}:", u.scheme()),
    });
    // Every client registered itself: its name is a claim, not a fact. Say
    // so, and put where the code goes (the one thing a phisher cannot fake)
    // first. A metadata-document client is at least named by its domain.
    let vouched_by = if cimd::is_metadata_url(&c.client.client_id) {
        Url::parse(&c.client.client_id).ok().and_then(|u| u.host_str().map(str::to_owned))
    } else {
        None
    };
    let unverified = match &vouched_by {
        Some(host) => format!(
            "<p class=\"warning\" role=\"note\"><strong>Unverified app.</strong> \
             {host} describes this app and chose its name; BuildMyMCP has not checked it.</p>",
            host = esc(host)
        ),
        None => "<p class=\"warning\" role=\"note\"><strong>Unverified app.</strong> \
                 Anyone can register an app under any name; BuildMyMCP has not checked this one. \
                 Allow only if you just started connecting from this app and you recognise where it returns to.</p>"
            .to_owned(),
    };
    let body = format!(
        "<h1>Connect {client} to {server}?</h1>\
         <p class=\"return-to\">Access will be sent to <strong id=\"return-host\">{ret}</strong></p>\
         {unverified}\
         <dl><dt>App</dt><dd>{client} <span class=\"badge\">unverified</span></dd>\
         <dt>Server</dt><dd>{server}<br><code>{resource}</code></dd>\
         <dt>Signed in as</dt><dd>{email}</dd>\
         <dt>Returns to</dt><dd><code>{redirect}</code></dd></dl>\
         <p>The app will be able to:</p><ul>{scopes}</ul>\
         <form method=\"post\" action=\"/oauth/authorize\">{fields}\
         <div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"approve\" class=\"arm-later\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button></div></form>",
        client = esc(c.client.display_name()),
        server = esc(&server.name),
        resource = esc(&c.resource),
        email = esc(&user.email),
        ret = esc(&return_to.unwrap_or_default()),
        redirect = esc(&c.redirect_uri),
    );
    page(StatusCode::OK, "Allow access", &body)
}

pub(super) async fn authorize_post(
    State(st): State<AuthState>,
    headers: HeaderMap,
    form: Result<axum::Form<AuthorizeParams>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(p)) = form else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Cannot connect this app",
            "The approval form was malformed. Connect again from the app.",
        );
    };
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return internal(&e),
    };
    let c = match check(&mut conn, &st, &p).await {
        Ok(c) => c,
        Err(r) => {
            return refuse_traced(&mut conn, &st, &p, r).await;
        }
    };
    let Some((session_token, user)) = signed_in(&mut conn, &headers).await else {
        return error_page(StatusCode::UNAUTHORIZED, "Signed out", "Your session ended. Connect again from the app.");
    };
    let csrf_ok =
        p.csrf.as_deref().is_some_and(|t| constant_time_eq(t.as_bytes(), csrf_token(&session_token).as_bytes()));
    if !csrf_ok {
        return error_page(
            StatusCode::FORBIDDEN,
            "Request not accepted",
            "This approval did not come from the consent page. Connect again from the app.",
        );
    }
    let server = match user_server(&mut conn, &st, &c, &user).await {
        Ok(s) => s,
        Err(r) => {
            return refuse_traced(&mut conn, &st, &p, r).await;
        }
    };
    let name = c.client.display_name().to_owned();
    if p.decision.as_deref() != Some("approve") {
        trace::record(
            &mut conn,
            Some(server.org_id),
            Some(server.id),
            Some(&c.client.client_id),
            Some(&name),
            "authorize",
            false,
            "access_denied: the user denied access",
        )
        .await;
        // The user chose Deny on a page that showed where the app returns to.
        return error_redirect(&st, &c.redirect_uri, c.state.as_deref(), "access_denied", "the user denied access");
    }
    let code = new_token("");
    let inserted = diesel::insert_into(oauth_codes::table)
        .values((
            oauth_codes::code_hash.eq(hash_token(&code)),
            oauth_codes::client_id.eq(&c.client.client_id),
            oauth_codes::user_id.eq(user.user_id),
            oauth_codes::org_id.eq(user.org_id),
            oauth_codes::redirect_uri.eq(&c.redirect_uri),
            oauth_codes::code_challenge.eq(&c.challenge),
            oauth_codes::resource.eq(&c.resource),
            oauth_codes::scope.eq(&c.scope),
            oauth_codes::expires_at.eq(Utc::now() + CODE_TTL),
        ))
        .execute(&mut conn)
        .await;
    if let Err(e) = inserted {
        return internal(&e.into());
    }
    trace::record(
        &mut conn,
        Some(server.org_id),
        Some(server.id),
        Some(&c.client.client_id),
        Some(&name),
        "authorize",
        true,
        &format!("{} approved access ({})", user.email, c.scope),
    )
    .await;
    let iss = st.cfg.issuer();
    let mut pairs = vec![("code", code.as_str()), ("iss", iss.as_str())];
    if let Some(s) = &c.state {
        pairs.push(("state", s));
    }
    redirect_with(&c.redirect_uri, &pairs)
}
