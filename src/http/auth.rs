//! Who is calling: `Authorization: Token …` (as DRF) or `Bearer …`.

use super::error::{ApiResult, RequestError};
use super::AppState;
use crate::engine::Caller;
use crate::tokens::hash_token;
use actix_web::http::header;
use actix_web::HttpRequest;

pub async fn caller(req: &HttpRequest, state: &AppState) -> ApiResult<Caller> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return if state.anonymous {
            Ok(Caller::Anonymous)
        } else {
            Err(RequestError::Unauthenticated.into())
        };
    };
    let value = value.to_str().map_err(|_| RequestError::InvalidToken)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(RequestError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("token") && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(RequestError::InvalidToken.into());
    }
    let token_hash = hash_token(token.trim());
    let owner = state
        .engine
        .read_meta(move |meta| meta.token_owner(&token_hash))
        .await?;
    owner
        .map(Caller::Owner)
        .ok_or_else(|| RequestError::InvalidToken.into())
}
