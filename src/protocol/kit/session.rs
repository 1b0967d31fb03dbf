//! A visitor's session: a random cookie chunkd issues to a caller without
//! a token, so that what it attaches stays its own. Only the cookie's hash
//! is kept, as the holder of its attachments.

use crate::tokens::hash_token;
use actix_web::http::header;
use actix_web::HttpRequest;
use std::time::Duration;

const COOKIE: &str = "chunkd_session";
/// Hex digits of a session cookie: 256 random bits.
const COOKIE_LEN: usize = 64;

/// A visitor's session.
pub struct Session {
    /// Who holds what the visitor attaches: `session:<hash>`.
    pub holder: String,
    /// `Set-Cookie` for a visitor who had no session yet.
    pub issued: Option<String>,
}

/// The cookie `name` of the request, if it sent one.
fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// The visitor's session, or a new one. `secure`: the visitor came over
/// TLS, so the cookie goes only there. It lives `max_age`.
pub fn session(req: &HttpRequest, secure: bool, max_age: Duration) -> Session {
    let sent = cookie(req, COOKIE)
        .filter(|v| v.len() == COOKIE_LEN && v.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(value) = sent {
        return Session {
            holder: format!("session:{}", hash_token(value)),
            issued: None,
        };
    }
    let mut secret = [0u8; COOKIE_LEN / 2];
    getrandom::fill(&mut secret).expect("the operating system's random source works");
    let value = crate::engine::checksum::to_hex(&secret);
    let secure = if secure { "; Secure" } else { "" };
    Session {
        holder: format!("session:{}", hash_token(&value)),
        issued: Some(format!(
            "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            max_age.as_secs()
        )),
    }
}
