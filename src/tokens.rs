//! API tokens: random, shown once, stored only as their SHA-256.

use crate::engine::checksum::to_hex;
use crate::meta::{MetaResult, MetaStore, TokenRecord};
use chrono::{SubsecRound, Utc};
use digest::Digest;

pub fn hash_token(token: &str) -> String {
    to_hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// Creates a token for `owner`; returns its record and the token itself.
pub fn create_token(meta: &dyn MetaStore, owner: &str) -> MetaResult<(TokenRecord, String)> {
    let mut secret = [0u8; 20];
    getrandom::fill(&mut secret).expect("the operating system's random source works");
    // 40 hex digits, the shape of DRF tokens.
    let token = to_hex(&secret);
    let record = TokenRecord {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        owner: owner.to_owned(),
        token_hash: hash_token(&token),
        created_at: Utc::now().trunc_subsecs(6),
    };
    meta.insert_token(&record)?;
    Ok((record, token))
}
