//! The HTTP surface: shared state, the router, and the sign-in pages
//! (`/auth/sign-in`, `/auth/verify`, `/auth/sign-out`, `/auth/style.css`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use bmm_core::Config;
use bmm_db::{Conn, Pool};
use serde::Deserialize;

use crate::error::AuthError;
use crate::keys::KeyStore;
use crate::magic::{
    BROWSER_COOKIE, consume_magic_link, create_bound_magic_link, peek_magic_link, safe_next, send_magic_link,
};
use crate::pages::{check_email, error_page, page, sign_in_form};
use crate::{identity, principal};

/// What the auth routes need. Cheap to clone.
#[derive(Clone)]
pub struct AuthState {
    pub pool: Pool,
    pub cfg: Arc<Config>,
    pub keys: KeyStore,
}

impl AuthState {
    pub fn new(pool: Pool, cfg: Arc<Config>, keys: KeyStore) -> AuthState {
        AuthState { pool, cfg, keys }
    }

    pub(crate) async fn conn(&self) -> Result<Conn, AuthError> {
        self.pool.get().await.map_err(|e| AuthError::Pool(e.to_string()))
    }
}

/// All auth routes: `/auth/*`, `/oauth/*`, `/.well-known/oauth-authorization-server`.
pub fn routes(state: AuthState) -> Router {
    Router::new()
        .route("/auth/sign-in", get(sign_in_page).post(sign_in_submit))
        .route("/auth/verify", get(verify_page).post(verify))
        .route("/auth/sign-out", post(sign_out))
        .route("/auth/style.css", get(style))
        .with_state(state.clone())
        .merge(crate::oauth::routes(state))
}

/// The caller's IP, when the server was started with connect info.
pub(crate) struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())))
    }
}

/// A page for an internal error: the cause goes to the log only.
pub(crate) fn internal(e: &AuthError) -> Response {
    tracing::error!(error = ?e, "auth request failed");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Please try again in a moment.")
}

async fn style() -> Response {
    let mut resp = crate::pages::STYLE_CSS.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn sign_in_page(Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    page(StatusCode::OK, "Sign in", &sign_in_form(next.as_deref(), "", None))
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    email: String,
    next: Option<String>,
}

/// The cookie that marks the browser asking for a link (kept for as long as
/// a link lives, sent only to `/auth/`).
fn browser_cookie(cfg: &Config, value: String) -> axum_extra::extract::cookie::Cookie<'static> {
    use axum_extra::extract::cookie::{Cookie, SameSite};
    Cookie::build((BROWSER_COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/auth/")
        .secure(cfg.public_url.scheme() == "https")
        .max_age(cookie::time::Duration::seconds(crate::magic::MAGIC_LINK_TTL.num_seconds()))
        .build()
}

async fn sign_in_submit(
    State(st): State<AuthState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return internal(&e),
    };
    // Reuse the browser's marker so several links asked from it all match.
    let browser = jar
        .get(BROWSER_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| (20..=100).contains(&v.len()))
        .unwrap_or_else(|| bmm_core::crypto::new_token(""));
    let jar = jar.add(browser_cookie(&st.cfg, browser.clone()));
    let made =
        create_bound_magic_link(&mut conn, &st.cfg, &form.email, next.as_deref(), ip.as_deref(), Some(&browser)).await;
    let resp = match made {
        Ok(url) => {
            let email = identity::normalize_email(&form.email).unwrap_or_default();
            if let Err(e) = send_magic_link(&st.cfg, &email, &url).await {
                tracing::error!(error = ?e, "magic link delivery failed");
                return error_page(
                    StatusCode::BAD_GATEWAY,
                    "Email not sent",
                    "We could not send the sign-in email just now. Please try again in a minute.",
                );
            }
            page(StatusCode::OK, "Check your email", &check_email(&email))
        }
        Err(AuthError::InvalidEmail(m)) => {
            page(StatusCode::BAD_REQUEST, "Sign in", &sign_in_form(next.as_deref(), &form.email, Some(&m)))
        }
        Err(AuthError::RateLimited) => {
            error_page(StatusCode::TOO_MANY_REQUESTS, "Too many requests", &AuthError::RateLimited.to_string())
        }
        Err(e) => internal(&e),
    };
    (jar, resp).into_response()
}

#[derive(Deserialize)]
struct VerifyQuery {
    #[serde(default)]
    token: String,
}

fn invalid_link_page() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Link not valid",
        &format!(
            "<h1>This link does not work any more</h1><p role=\"alert\" class=\"error\">{}</p><p><a href=\"/auth/sign-in\">Get a new sign-in link</a></p>",
            crate::pages::esc(&AuthError::InvalidLink.to_string())
        ),
    )
}

/// `GET /auth/verify`: a confirmation page, never a sign-in. Mail scanners
/// and link previews open links; only the button below uses it.
async fn verify_page(State(st): State<AuthState>, jar: CookieJar, Query(q): Query<VerifyQuery>) -> Response {
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return internal(&e),
    };
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let link = match peek_magic_link(&mut conn, &q.token, browser.as_deref()).await {
        Ok(l) => l,
        Err(AuthError::InvalidLink) => return invalid_link_page(),
        Err(e) => return internal(&e),
    };
    let esc = crate::pages::esc;
    let elsewhere = if link.opened_elsewhere {
        "<p class=\"warning\" role=\"alert\" id=\"opened-elsewhere\"><strong>This link was asked for from another browser or device.</strong> \
         Continue only if you asked for it yourself just now: someone may be trying to sign you in to their account.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Sign in as {email}?</h1>{elsewhere}\
         <form method=\"post\" action=\"/auth/verify\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"muted\">Not you, or did not ask to sign in? Close this page; the link expires on its own.</p>",
        email = esc(&link.email),
        token = esc(q.token.trim()),
    );
    page(StatusCode::OK, "Confirm sign-in", &body)
}

#[derive(Deserialize)]
struct VerifyForm {
    #[serde(default)]
    token: String,
}

/// Whether a form POST came from another site (login CSRF: a page that
/// submits its author's own link to sign the visitor in as them). Browsers
/// send `Origin` (or `Sec-Fetch-Site`) on form posts; clients that send
/// neither are not browsers.
fn cross_site_post(cfg: &Config, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    // The page's `Referrer-Policy: no-referrer` makes Chromium send
    // `Origin: null` on its own form, so Sec-Fetch-Site decides when present.
    if let Some(site) = fetch_site {
        return site != "same-origin" && site != "none";
    }
    origin.is_some_and(|o| !o.eq_ignore_ascii_case(&cfg.public_url.origin().ascii_serialization()))
}

/// `POST /auth/verify`: the confirmation page's button signs in.
async fn verify(
    State(st): State<AuthState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    form: Result<axum::Form<VerifyForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if cross_site_post(&st.cfg, &headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Request not accepted",
            "This sign-in did not come from the sign-in page. Open the link from your email again.",
        );
    }
    let Ok(axum::Form(form)) = form else { return invalid_link_page() };
    let mut conn = match st.conn().await {
        Ok(c) => c,
        Err(e) => return internal(&e),
    };
    let (user, org, next) = match consume_magic_link(&mut conn, &form.token).await {
        Ok(v) => v,
        Err(AuthError::InvalidLink) => return invalid_link_page(),
        Err(e) => return internal(&e),
    };
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let (token, session) = match identity::create_session(&mut conn, user.id, org.id, ip.as_deref(), ua).await {
        Ok(v) => v,
        Err(e) => return internal(&e),
    };
    bmm_db::audit::record(
        &mut conn,
        bmm_db::audit::Audit {
            org_id: org.id,
            user_id: Some(user.id),
            action: "auth.login",
            resource_type: "session",
            resource_id: Some(session.id.to_string()),
            metadata: serde_json::json!({}),
            ip,
        },
    )
    .await;
    let jar = jar.add(identity::session_cookie(&st.cfg, token));
    (jar, Redirect::to(next.as_deref().unwrap_or("/"))).into_response()
}

async fn sign_out(State(st): State<AuthState>, jar: CookieJar, ClientIp(ip): ClientIp) -> Response {
    // SameSite=Lax keeps other sites from posting here with the cookie.
    if let Some(token) = jar.get(identity::SESSION_COOKIE).map(|c| c.value().to_owned()) {
        let mut conn = match st.conn().await {
            Ok(c) => c,
            Err(e) => return internal(&e),
        };
        if let Ok(p) = principal::authenticate_session(&mut conn, &token).await {
            bmm_db::audit::record(
                &mut conn,
                bmm_db::audit::Audit {
                    org_id: p.org_id,
                    user_id: Some(p.user_id),
                    action: "auth.logout",
                    resource_type: "session",
                    resource_id: None,
                    metadata: serde_json::json!({}),
                    ip,
                },
            )
            .await;
        }
        if let Err(e) = identity::revoke_session_token(&mut conn, &token).await {
            return internal(&e);
        }
    }
    let jar = jar.add(identity::clear_session_cookie(&st.cfg));
    (jar, Redirect::to("/auth/sign-in")).into_response()
}
