//! Who may use the web console: the one-time login tokens the socket's owner mints
//! (`POST /v1/web/login`, `banger web`), the session cookie a token is exchanged for, the
//! CSRF token derived from each session, and the secret all of them hang on.
//!
//! Sessions are *signed*, not stored: the cookie carries a random session id and its expiry,
//! authenticated with HMAC-SHA256 under a 32-byte secret kept in `$STATE/web-secret` (0600).
//! That keeps a browser signed in across daemon restarts (the CLI restarts an outdated daemon
//! on every upgrade), needs no session table that grows with every login, and lets a user
//! sign out every browser at once by deleting the secret file. The state that must be
//! server-side is small and short-lived: unused login tokens (single use, 2 minutes) and the
//! ids of sessions signed out before they expired.
//!
//! The CSRF token of a session is HMAC(secret, session id): stable for the session, so every
//! page can embed it without bookkeeping, and unforgeable without the secret. Every check of
//! a MAC is constant-time (`Mac::verify_slice`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "banger_session";
/// How long a session lasts; the user runs `banger web` again afterwards.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// How long a login URL stays usable: long enough to open it, short enough that a copy of it
/// found later (shell history, a screenshot) is worthless.
pub const LOGIN_TTL: Duration = Duration::from_secs(120);

const SECRET_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why the console's secret could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the web console secret {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the web console secret {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads `$STATE/web-secret`, creating it (0600) on first start. A file of the wrong size
/// (truncated by a full disk, edited by hand) is replaced: that only signs every browser out.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; SECRET_LEN], SecretError> {
    match std::fs::File::open(path) {
        Ok(mut file) => {
            let read_error = |source| SecretError::Read {
                path: path.to_owned(),
                source,
            };
            let meta = file.metadata().map_err(read_error)?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the web console secret was readable by others; making it private"
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(read_error)?;
            }
            let mut bytes = Vec::with_capacity(SECRET_LEN);
            Read::by_ref(&mut file)
                .take(SECRET_LEN as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(read_error)?;
            match <[u8; SECRET_LEN]>::try_from(bytes.as_slice()) {
                Ok(secret) => Ok(secret),
                Err(_) => {
                    tracing::warn!(
                        path = %path.display(),
                        len = bytes.len(),
                        "the web console secret is damaged; making a new one (browsers must \
                         sign in again)"
                    );
                    write_new_secret(path)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new_secret(path),
        Err(source) => Err(SecretError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a fresh secret next to `path` and renames it into place, so a crash never leaves a
/// half-written secret.
fn write_new_secret(path: &Path) -> Result<[u8; SECRET_LEN], SecretError> {
    let write_error = |source| SecretError::Write {
        path: path.to_owned(),
        source,
    };
    let secret: [u8; SECRET_LEN] = rand::random();
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_error)?;
    file.write_all(&secret).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&tmp, path).map_err(write_error)?;
    Ok(secret)
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// 32 hex digits, random.
    pub id: String,
    /// Unix seconds after which the cookie is refused.
    pub expires: u64,
}

/// Tokens, sessions and CSRF tokens of one console.
pub struct Auth {
    key: [u8; SECRET_LEN],
    /// Unused login tokens and when each stops working.
    logins: Mutex<HashMap<String, Instant>>,
    /// Sessions signed out before their expiry, with that expiry (then they can be forgotten).
    revoked: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch: the clock session expiries are written in.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    pub fn new(key: [u8; SECRET_LEN]) -> Auth {
        Auth {
            key,
            logins: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, label: &str, parts: &[&str]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        // The label separates the uses of the one key (a session tag is never a CSRF token).
        mac.update(label.as_bytes());
        for part in parts {
            mac.update(b"\0");
            mac.update(part.as_bytes());
        }
        mac
    }

    /// Mints a login token usable once within `ttl`.
    pub fn mint_login(&self, ttl: Duration) -> String {
        let token = random_hex();
        let now = Instant::now();
        let mut logins = lock(&self.logins);
        logins.retain(|_, deadline| *deadline > now);
        logins.insert(token.clone(), now + ttl);
        token
    }

    /// Uses up a login token. False when it is unknown, already used or expired.
    pub fn consume_login(&self, token: &str) -> bool {
        lock(&self.logins)
            .remove(token)
            .is_some_and(|deadline| deadline > Instant::now())
    }

    /// Starts a session at `now` (Unix seconds); returns it with its cookie value.
    pub fn new_session(&self, now: u64) -> (Session, String) {
        let session = Session {
            id: random_hex()[..32].to_owned(),
            expires: now + SESSION_TTL.as_secs(),
        };
        let cookie = self.cookie_value(&session);
        (session, cookie)
    }

    fn cookie_value(&self, session: &Session) -> String {
        let expires = session.expires.to_string();
        let tag = self
            .mac("session", &[&session.id, &expires])
            .finalize()
            .into_bytes();
        format!("{}.{expires}.{}", session.id, hex(&tag))
    }

    /// The session a cookie value proves, if its signature holds and it is neither expired
    /// nor signed out.
    pub fn verify_cookie(&self, value: &str, now: u64) -> Option<Session> {
        let mut parts = value.split('.');
        let (id, expires, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || id.len() != 32
            || !id.bytes().all(|b| b.is_ascii_hexdigit())
            || !expires.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let tag = unhex(tag)?;
        self.mac("session", &[id, expires])
            .verify_slice(&tag)
            .ok()?;
        let expires: u64 = expires.parse().ok()?;
        if expires <= now || lock(&self.revoked).contains_key(id) {
            return None;
        }
        Some(Session {
            id: id.to_owned(),
            expires,
        })
    }

    /// The session proven by any `banger_session` cookie in `Cookie` headers. Several may
    /// arrive: another service on this host (any port) can set cookies for it, so one bad
    /// cookie must not hide the good one.
    pub fn session_from_cookies<'a>(
        &self,
        headers: impl Iterator<Item = &'a str>,
        now: u64,
    ) -> Option<Session> {
        headers
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .find_map(|(_, value)| self.verify_cookie(value.trim_matches('"'), now))
    }

    /// Signs a session out before its expiry.
    pub fn revoke(&self, session: &Session, now: u64) {
        let mut revoked = lock(&self.revoked);
        revoked.retain(|_, expires| *expires > now);
        revoked.insert(session.id.clone(), session.expires);
    }

    /// The CSRF token every form of `session` carries.
    pub fn csrf_token(&self, session: &Session) -> String {
        hex(&self.mac("csrf", &[&session.id]).finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token of `session`, compared in constant time.
    pub fn check_csrf(&self, session: &Session, token: &str) -> bool {
        unhex(token).is_some_and(|tag| self.mac("csrf", &[&session.id]).verify_slice(&tag).is_ok())
    }

    /// The `Set-Cookie` value that starts `session` in a browser.
    pub fn set_cookie_header(&self, session: &Session) -> String {
        // No `Secure`: the console is plain HTTP on loopback. SameSite=Strict keeps the cookie
        // off every request another site starts; HttpOnly keeps it from scripts.
        format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.cookie_value(session),
            SESSION_TTL.as_secs()
        )
    }
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie_header() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single inserts and removes cannot leave the maps half-changed: a poisoned lock is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_hex() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new([7; 32])
    }

    #[test]
    fn login_tokens_work_once_and_expire() {
        let a = auth();
        let token = a.mint_login(LOGIN_TTL);
        assert_eq!(token.len(), 64);
        assert!(a.consume_login(&token));
        assert!(!a.consume_login(&token), "a token is single use");
        let expired = a.mint_login(Duration::ZERO);
        assert!(!a.consume_login(&expired));
        assert!(!a.consume_login("not-a-token"));
    }

    #[test]
    fn session_cookies_are_signed_and_expire() {
        let a = auth();
        let now = 1_000_000;
        let (session, cookie) = a.new_session(now);
        assert_eq!(a.verify_cookie(&cookie, now), Some(session.clone()));
        assert_eq!(a.verify_cookie(&cookie, session.expires), None, "expired");
        // Any change to id, expiry or tag breaks the signature.
        let (id, rest) = cookie.split_once('.').unwrap();
        let (_, tag) = rest.split_once('.').unwrap();
        let later = format!("{id}.{}.{tag}", session.expires + 3600);
        assert_eq!(a.verify_cookie(&later, now), None);
        let mut other_id = id.to_owned();
        other_id.replace_range(0..1, if id.starts_with('0') { "1" } else { "0" });
        assert_eq!(a.verify_cookie(&format!("{other_id}.{rest}"), now), None);
        for junk in [
            "",
            "x",
            "a.b.c",
            &format!("{cookie}.x"),
            &cookie[..cookie.len() - 2],
        ] {
            assert_eq!(a.verify_cookie(junk, now), None, "{junk}");
        }
        // Another secret does not accept it.
        assert_eq!(Auth::new([8; 32]).verify_cookie(&cookie, now), None);
    }

    #[test]
    fn a_revoked_session_is_refused() {
        let a = auth();
        let (session, cookie) = a.new_session(10);
        a.revoke(&session, 10);
        assert_eq!(a.verify_cookie(&cookie, 11), None);
    }

    #[test]
    fn the_good_cookie_wins_among_several() {
        let a = auth();
        let (session, cookie) = a.new_session(10);
        let header = format!("other=1; {SESSION_COOKIE}=forged; {SESSION_COOKIE}={cookie}");
        assert_eq!(
            a.session_from_cookies([header.as_str()].into_iter(), 11),
            Some(session)
        );
        assert_eq!(
            a.session_from_cookies(["banger_session=forged"].into_iter(), 11),
            None
        );
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let a = auth();
        let (one, _) = a.new_session(10);
        let (two, _) = a.new_session(10);
        let token = a.csrf_token(&one);
        assert!(a.check_csrf(&one, &token));
        assert!(!a.check_csrf(&two, &token));
        assert!(!a.check_csrf(&one, ""));
        assert!(!a.check_csrf(&one, &token[..62]));
        assert!(!a.check_csrf(&one, "zz"));
    }

    #[test]
    fn the_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-secret");
        let first = load_or_create_secret(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(&path).unwrap(), first);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_secret(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a readable secret is made private");
        std::fs::write(&path, b"short").unwrap();
        let replaced = load_or_create_secret(&path).unwrap();
        assert_ne!(replaced, first);
        assert_eq!(std::fs::read(&path).unwrap(), replaced);
    }
}
