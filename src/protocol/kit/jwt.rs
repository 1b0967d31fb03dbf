//! Upload tokens that the application issues itself: JWTs signed with
//! `--jwt-secret` (HS256) or the private half of `--jwt-public-key` (RS256,
//! ES256 or EdDSA, by the key's type). `sub` is the owner and `exp` is
//! required; optional claims narrow what the token allows. chunkd keeps no
//! record of them: they cannot be revoked, so keep them short-lived.

use crate::engine::{Caller, Grant};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

/// The key tokens are verified with, and what a valid one must be.
pub struct JwtKeys {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct UploadClaims {
    sub: String,
    /// The largest upload the token may create, in bytes.
    #[serde(default)]
    max_bytes: Option<u64>,
    /// The file extensions it may create, without the dot.
    #[serde(default)]
    extensions: Option<Vec<String>>,
    /// The one upload it may act on; it creates none.
    #[serde(default)]
    upload_id: Option<Uuid>,
}

impl JwtKeys {
    /// HS256 tokens signed with `secret`.
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        DecodingKey::from_secret(secret)
            .map(|key| JwtKeys::new(key, &[Algorithm::HS256]))
            .map_err(|err| err.to_string())
    }

    /// Tokens signed with the private half of `pem`: an RSA, EC (P-256) or
    /// Ed25519 public key.
    pub fn from_public_key(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(JwtKeys::new(key, &[Algorithm::RS256]));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(JwtKeys::new(key, &[Algorithm::ES256]));
        }
        DecodingKey::from_ed_pem(pem)
            .map(|key| JwtKeys::new(key, &[Algorithm::EdDSA]))
            .map_err(|_| "not an RSA, EC (P-256) or Ed25519 public key in PEM".to_owned())
    }

    fn new(key: DecodingKey, algorithms: &[Algorithm]) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Clocks of the application and of chunkd may differ by a little.
        validation.leeway = 30;
        JwtKeys { key, validation }
    }

    /// The caller a token makes, if it is valid: signed with this key,
    /// not expired, with a non-empty `sub`.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        let claims = decode::<UploadClaims>(token, &self.key, &self.validation)
            .ok()?
            .claims;
        let name = claims.sub.trim().to_owned();
        if name.is_empty() {
            return None;
        }
        let extensions = claims.extensions.map(|list| {
            list.iter()
                .map(|ext| ext.trim_start_matches('.').to_ascii_lowercase())
                .collect()
        });
        Some(Caller::Granted {
            name,
            grant: Grant {
                max_bytes: claims.max_bytes,
                extensions,
                upload: claims.upload_id,
            },
        })
    }
}

/// Whether `token` has the shape of a JWT (three dot-separated parts), not
/// that of chunkd's own 40-hex-digit tokens.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}
