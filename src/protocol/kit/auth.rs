//! Who is calling: `Authorization: Token …` (as DRF) or `Bearer …`.

use super::jwt::looks_like_jwt;
use super::AppState;
use crate::engine::{Caller, EngineError};
use crate::tokens::hash_token;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest};
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a request has no caller. Each protocol answers these in its own way.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Unauthenticated,
    #[error("invalid token")]
    InvalidToken,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type AuthResult<T> = Result<T, AuthError>;

/// Tokens remembered at most; past it the memory starts afresh.
const KNOWN_TOKENS_MAX: usize = 4096;

/// The owners of tokens found valid, by token hash. A token's owner never
/// changes, so an entry can only go stale by the token being revoked, and
/// the only requests that trust an entry are appends, whose lease checks
/// in its own statement that the token still exists: each chunk then costs
/// one statement less.
#[derive(Default)]
pub struct KnownTokens(Mutex<HashMap<String, String>>);

impl KnownTokens {
    fn get(&self, token_hash: &str) -> Option<String> {
        self.map().get(token_hash).cloned()
    }

    fn remember(&self, token_hash: &str, owner: Option<&str>) {
        let mut map = self.map();
        match owner {
            Some(owner) => {
                if map.len() >= KNOWN_TOKENS_MAX {
                    map.clear();
                }
                map.insert(token_hash.to_owned(), owner.to_owned());
            }
            None => {
                map.remove(token_hash);
            }
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a request presents to say who it is.
enum Presented {
    /// Nothing, and the server takes anonymous requests.
    Nothing,
    /// One of chunkd's own tokens, by its hash.
    Token(String),
    /// An application's JWT, already verified.
    Granted(Caller),
}

/// What the request presents: its token's hash, or the caller of its
/// valid JWT.
fn presented(req: &HttpRequest, state: &AppState) -> AuthResult<Presented> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return if state.anonymous {
            Ok(Presented::Nothing)
        } else {
            Err(AuthError::Unauthenticated)
        };
    };
    let value = value.to_str().map_err(|_| AuthError::InvalidToken)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("token") && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidToken);
    }
    let token = token.trim();
    match &state.jwt {
        Some(keys) if looks_like_jwt(token) => keys
            .verify(token)
            .map(Presented::Granted)
            .ok_or(AuthError::InvalidToken),
        _ => Ok(Presented::Token(hash_token(token))),
    }
}

/// The owner of a token, looked up in the database (and remembered).
async fn look_up(state: &AppState, token_hash: String) -> AuthResult<Caller> {
    let owner = {
        let token_hash = token_hash.clone();
        state
            .engine
            .read_meta(move |meta| meta.token_owner(&token_hash))
            .await?
    };
    state.known_tokens.remember(&token_hash, owner.as_deref());
    match owner {
        Some(name) => Ok(Caller::Owner { name, token_hash }),
        None => Err(AuthError::InvalidToken),
    }
}

/// The caller, its token looked up.
pub async fn caller(req: &HttpRequest, state: &AppState) -> AuthResult<Caller> {
    let caller = match presented(req, state)? {
        Presented::Token(token_hash) => look_up(state, token_hash).await?,
        Presented::Granted(caller) => caller,
        Presented::Nothing => Caller::Anonymous,
    };
    note_owner(req, &caller);
    Ok(caller)
}

/// The owner a request acted as, for its log line.
#[derive(Clone)]
pub struct LoggedOwner(pub String);

fn note_owner(req: &HttpRequest, caller: &Caller) {
    if let Some(name) = caller.owner() {
        req.extensions_mut().insert(LoggedOwner(name.to_owned()));
    }
}

/// The caller of an append to an existing upload: the owner of a token
/// found valid before, without a lookup (the lease checks the token).
pub struct Appender {
    pub caller: Caller,
    remembered: bool,
}

impl Appender {
    pub async fn of(req: &HttpRequest, state: &AppState) -> AuthResult<Appender> {
        let token_hash = match presented(req, state)? {
            Presented::Token(token_hash) => token_hash,
            Presented::Granted(caller) => {
                note_owner(req, &caller);
                return Ok(Appender {
                    caller,
                    remembered: false,
                });
            }
            Presented::Nothing => {
                return Ok(Appender {
                    caller: Caller::Anonymous,
                    remembered: false,
                })
            }
        };
        let (caller, remembered) = match state.known_tokens.get(&token_hash) {
            Some(name) => (Caller::Owner { name, token_hash }, true),
            None => (look_up(state, token_hash).await?, false),
        };
        note_owner(req, &caller);
        Ok(Appender { caller, remembered })
    }

    /// `outcome`, unless it failed and the remembered token turns out to
    /// be revoked: then the answer is the one an unknown token gets (a
    /// lease refused for a revoked token reads as a missing upload).
    pub async fn confirm<T, E: From<AuthError>>(
        &self,
        state: &AppState,
        outcome: Result<T, E>,
    ) -> Result<T, E> {
        match (&outcome, &self.caller) {
            (Err(_), Caller::Owner { token_hash, .. }) if self.remembered => {
                look_up(state, token_hash.clone()).await?;
                outcome
            }
            _ => outcome,
        }
    }
}
