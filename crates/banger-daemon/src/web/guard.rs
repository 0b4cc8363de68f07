//! The checks every request to the web console passes before a handler runs, and the
//! headers every answer carries, whoever asked.
//!
//! In order: the `Host` header must name this console (an allowlist of the loopback names
//! and the bound address, which defeats DNS rebinding: a hostile page whose name resolves to
//! 127.0.0.1 still sends its own name); a request that can change something (any method but
//! GET and HEAD) must not come from another site (`Origin`, `Sec-Fetch-Site`); and everything
//! but `/login` needs a valid session. The CSRF token of state-changing forms is checked by
//! the form extractor ([`super::forms::CsrfForm`]), which is the only way handlers read a body.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::auth::unix_now;
use super::views;
use crate::Daemon;

/// Only this console's own files: no inline script or style, no framing, forms post home.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The `Host` values (and so the origins) this console answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    hosts: Vec<String>,
}

impl AllowedHosts {
    /// The names a browser on this machine uses for `addr`'s port, plus `addr` itself (which
    /// covers a remote address the config allowed).
    pub fn for_listener(addr: SocketAddr) -> AllowedHosts {
        let port = addr.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let own = addr.to_string();
        if !hosts.contains(&own) {
            hosts.push(own);
        }
        if port == 80 {
            // Browsers leave the default port out of `Host`.
            let bare: Vec<String> = hosts
                .iter()
                .filter_map(|h| h.strip_suffix(":80").map(str::to_owned))
                .collect();
            hosts.extend(bare);
        }
        AllowedHosts { hosts }
    }

    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|host| self.allows_host(host))
    }

    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
}

/// Adds the security headers to every answer, refusals included.
pub async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, "content-security-policy", CONTENT_SECURITY_POLICY);
    set(h, "x-frame-options", "DENY");
    // Not `no-referrer`: under it browsers send `Origin: null` with every form POST (Fetch
    // standard), which would make the Origin check refuse the console's own forms or accept
    // `null` from anywhere. `same-origin` sends no referrer off the console either.
    set(h, "referrer-policy", "same-origin");
    set(h, "x-content-type-options", "nosniff");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    // Pages show live state and carry CSRF tokens: never keep them.
    set(h, "cache-control", "no-store");
    response
}

/// Host allowlist, cross-site refusal and the session requirement.
pub async fn gate(State(d): State<Arc<Daemon>>, mut req: Request, next: Next) -> Response {
    let Some(console) = d.web.serving() else {
        return views::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Console unavailable",
            "The web console is not serving.",
        );
    };
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(|h| console.hosts.allows_host(h)) {
        tracing::warn!(host = ?host, "web console: refused a request for another host");
        return views::refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "Wrong host",
            "This console answers only to the address banger prints; open the URL from \
             `banger web`.",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Some(origin) = headers.get(header::ORIGIN)
            && !origin
                .to_str()
                .is_ok_and(|o| console.hosts.allows_origin(o))
        {
            tracing::warn!(origin = ?origin, "web console: refused a cross-origin request");
            return cross_site();
        }
        if let Some(site) = headers.get("sec-fetch-site")
            && !matches!(site.as_bytes(), b"same-origin" | b"none")
        {
            tracing::warn!(site = ?site, "web console: refused a cross-site request");
            return cross_site();
        }
    }
    if req.uri().path() != "/login" {
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        match console.auth.session_from_cookies(cookies, unix_now()) {
            Some(session) => {
                req.extensions_mut().insert(session);
            }
            None => return views::sign_in_required(),
        }
    }
    next.run(req).await
}

fn cross_site() -> Response {
    views::refusal(
        StatusCode::FORBIDDEN,
        "Refused",
        "This request came from another site. The console only accepts changes made from its \
         own pages.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_the_loopback_names_of_the_port() {
        let hosts = AllowedHosts::for_listener("127.0.0.1:7878".parse().unwrap());
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST:7878",
            "[::1]:7878",
        ] {
            assert!(hosts.allows_host(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:7879",
            "evil.example:7878",
            "127.0.0.1.nip.io:7878",
            "localhost",
            "",
        ] {
            assert!(!hosts.allows_host(bad), "{bad}");
        }
        assert!(hosts.allows_origin("http://localhost:7878"));
        assert!(!hosts.allows_origin("https://localhost:7878"));
        assert!(!hosts.allows_origin("null"));
        assert!(!hosts.allows_origin("http://evil.example"));
    }

    #[test]
    fn a_remote_address_is_added_and_port_80_may_be_left_out() {
        let hosts = AllowedHosts::for_listener("192.168.1.5:80".parse().unwrap());
        assert!(hosts.allows_host("192.168.1.5:80"));
        assert!(hosts.allows_host("192.168.1.5"));
        assert!(hosts.allows_host("localhost"));
        assert!(!hosts.allows_host("192.168.1.6"));
    }
}
