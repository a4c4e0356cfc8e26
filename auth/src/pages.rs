//! Server-rendered pages (sign-in, consent, errors): plain HTML, a small
//! stylesheet, no scripts. Every dynamic value goes through [`esc`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stylesheet served at `/auth/style.css`: dark text on light, the
/// system font, visible focus, readable on narrow screens.
pub const STYLE_CSS: &str = r#":root { color-scheme: light; --fg: #1a1a1a; --muted: #4a4a4a; --bg: #f6f6f4; --card: #ffffff; --line: #d0d0cc; --accent: #0b57d0; --accent-fg: #ffffff; --danger: #a4161a; }
* { box-sizing: border-box; }
html { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 100%; line-height: 1.5; color: var(--fg); background: var(--bg); }
body { margin: 0; padding: 2rem 1rem; }
main { max-width: 32rem; margin: 0 auto; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; }
p, li { color: var(--fg); }
.muted { color: var(--muted); font-size: 0.95rem; }
label { display: block; font-weight: 600; margin: 1rem 0 0.25rem; }
input[type=email] { width: 100%; font: inherit; padding: 0.6rem 0.7rem; border: 1px solid #767676; border-radius: 6px; background: #fff; color: var(--fg); }
button { font: inherit; font-weight: 600; padding: 0.6rem 1.1rem; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: var(--accent-fg); cursor: pointer; margin-top: 1rem; }
button.secondary { background: #fff; color: var(--accent); }
.actions { display: flex; gap: 0.75rem; flex-wrap: wrap; }
:focus-visible { outline: 3px solid #e8a317; outline-offset: 2px; }
.error { color: var(--danger); font-weight: 600; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.9em; word-break: break-all; background: #eeeeea; padding: 0.1rem 0.3rem; border-radius: 4px; }
dl { margin: 1rem 0; } dt { font-weight: 600; margin-top: 0.75rem; } dd { margin: 0.2rem 0 0; word-break: break-word; }
a { color: var(--accent); }
.return-to { font-size: 1.15rem; border-left: 4px solid var(--accent); padding: 0.5rem 0.75rem; background: #eef3fc; }
.warning { border-left: 4px solid #b35c00; padding: 0.5rem 0.75rem; background: #fff4e5; }
.badge { font-size: 0.8rem; font-weight: 600; border: 1px solid #b35c00; color: #7a3e00; border-radius: 4px; padding: 0 0.3rem; }
/* Keyjacking: Allow cannot be clicked or focused in the first moment the page
   shows, so a keypress or click meant for another window cannot approve. */
.arm-later { animation: bmm-arm 0s linear 1s both; }
@keyframes bmm-arm { from { visibility: hidden; } to { visibility: visible; } }
@media (max-width: 30rem) { body { padding: 0.5rem; } main { padding: 1rem; border-radius: 0; } }
"#;

/// Escape text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body` (already escaped HTML).
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · BuildMyMCP</title><link rel=\"stylesheet\" href=\"/auth/style.css\"></head><body><main>{body}</main></body></html>",
        esc(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // Pages with forms must not be framed (clickjacking on consent) nor cached. No
    // form-action: after consent the browser follows a redirect to the client's
    // own scheme (cursor://, loopback), which form-action would block.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// An error page for problems that cannot be sent back to the client app.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<h1>{}</h1><p role=\"alert\" class=\"error\">{}</p><p class=\"muted\">You can close this window and try connecting again from your app.</p>",
            esc(title),
            esc(message)
        ),
    )
}

pub fn sign_in_form(next: Option<&str>, email: &str, error: Option<&str>) -> String {
    let error_html = error
        .map(|e| format!("<p id=\"email-error\" role=\"alert\" class=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let described = if error.is_some() { " aria-describedby=\"email-error\" aria-invalid=\"true\"" } else { "" };
    let next_field =
        next.map(|n| format!("<input type=\"hidden\" name=\"next\" value=\"{}\">", esc(n))).unwrap_or_default();
    format!(
        "<h1>Sign in to BuildMyMCP</h1><p class=\"muted\">We will email you a link that signs you in. No password needed.</p><form method=\"post\" action=\"/auth/sign-in\">{next_field}<label for=\"email\">Email address</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required autofocus value=\"{}\"{described}>{error_html}<button type=\"submit\">Email me a sign-in link</button></form>",
        esc(email)
    )
}

pub fn check_email(email: &str) -> String {
    format!(
        "<h1>Check your email</h1><p>If <strong>{}</strong> can receive email, a sign-in link is on its way. It works once and expires in 15 minutes.</p><p class=\"muted\">No email after a few minutes? Check your spam folder or <a href=\"/auth/sign-in\">ask for another link</a>.</p>",
        esc(email)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn sign_in_form_labels_its_field_and_escapes_values() {
        let html = sign_in_form(Some("/x\"><script>"), "a@b.c", Some("bad <email>"));
        assert!(html.contains("<label for=\"email\">"));
        assert!(html.contains("aria-describedby=\"email-error\""));
        assert!(!html.contains("<script>"));
        assert!(html.contains("bad &lt;email&gt;"));
    }
}
