//! Upload tokens that the application issues (JWTs): `sub` is the owner,
//! `exp` is honoured, a wrong signature or algorithm is refused, and the
//! optional claims (`max_bytes`, `extensions`, `upload_id`) narrow what a
//! token allows; chunkd's own tokens keep working beside them.

use crate::both_backends;
use crate::common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "an application secret, 32 bytes or more";

fn keys(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn signed(algorithm: Algorithm, claims: Value, private_key: &str) -> String {
    let pem = std::fs::read(keys(private_key)).unwrap();
    let key = match algorithm {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    encode(&Header::new(algorithm), &claims, &key).unwrap()
}

fn eddsa(claims: Value, private_key: &str) -> String {
    signed(Algorithm::EdDSA, claims, private_key)
}

fn bearer<'a>(server: &'a Server, jwt: &str) -> Client<'a> {
    Client {
        server,
        auth: format!("Bearer {jwt}"),
    }
}

fn create(client: &Client, name: &str, total: usize) -> Response {
    let range = format!("bytes 0-{}/{total}", total - 1);
    client.put_raw(
        &format!("/upload/?filename={name}"),
        &range,
        &bytes(total, 1),
    )
}

fn app_tokens_stand_for_their_owner(backend: Backend) {
    let setup = Setup::new(backend, &["--jwt-secret", SECRET]);
    let carol = hs256(json!({"sub": "carol", "exp": now() + 300}), SECRET);
    let client = bearer(&setup.server, &carol);
    let created = create(&client, "a.bin", 3);
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["user"], "carol");
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let tus = client.send("POST", "/files/", &[TUS, ("Upload-Length", "5")], b"");
    assert_eq!(tus.status, 201, "{}", tus.text());
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 2);
    // chunkd's own tokens still work, and see only their owner's uploads.
    let alice = setup.client();
    assert_eq!(alice.get("/upload/").json(), json!([]));
    assert_eq!(alice.get(&format!("/upload/{id}/")).status, 404);

    // Expired, wrongly signed, or without an owner: 401, in both protocols.
    for refused in [
        hs256(json!({"sub": "carol", "exp": now() - 120}), SECRET),
        hs256(
            json!({"sub": "carol", "exp": now() + 300}),
            "another secret, 32 bytes or more",
        ),
        hs256(json!({"exp": now() + 300}), SECRET),
        hs256(json!({"sub": "carol"}), SECRET),
        eddsa(
            json!({"sub": "carol", "exp": now() + 300}),
            "ed25519-private.pem",
        ),
        unsigned(&json!({"sub": "carol", "exp": now() + 300})),
    ] {
        let client = bearer(&setup.server, &refused);
        let chunked = create(&client, "b.bin", 3);
        assert_eq!(
            (chunked.status, chunked.json()),
            (401, json!({"detail": "Invalid token."}))
        );
        let tus = client.send("POST", "/files/", &[TUS, ("Upload-Length", "5")], b"");
        assert_eq!(tus.status, 401, "{}", tus.text());
    }

    // Claims that narrow the token.
    let narrow = hs256(
        json!({"sub": "carol", "exp": now() + 300, "max_bytes": 10, "extensions": ["pdf"]}),
        SECRET,
    );
    let client = bearer(&setup.server, &narrow);
    // As for --max-bytes, drf-chunked-upload answers 400, tus 413.
    let big = create(&client, "big.pdf", 11);
    assert_eq!(
        (big.status, big.json()),
        (
            400,
            json!({"detail": "Size of file exceeds the limit (10 bytes)"})
        )
    );
    assert_eq!(
        create(&client, "notes.txt", 10).json(),
        json!({"detail": "File extension not allowed"})
    );
    assert_eq!(create(&client, "paper.PDF", 10).status, 200);
    let over = client.send("POST", "/files/", &[TUS, ("Upload-Length", "11")], b"");
    assert_eq!(over.status, 413, "{}", over.text());

    // A token for one upload: that upload only, and no new ones.
    let only = hs256(
        json!({"sub": "carol", "exp": now() + 300, "upload_id": id}),
        SECRET,
    );
    let client = bearer(&setup.server, &only);
    assert_eq!(client.get(&format!("/upload/{id}/")).status, 200);
    assert_eq!(
        client
            .get(&format!("/upload/{}/", tus.location_id()))
            .status,
        404
    );
    assert_eq!(client.get("/upload/").json(), json!([]));
    assert_eq!(
        (
            create(&client, "c.bin", 3).status,
            create(&client, "c.bin", 3).json()
        ),
        (
            403,
            json!({"detail": "You do not have permission to perform this action."})
        )
    );
    assert_eq!(
        client
            .send("DELETE", &format!("/upload/{id}/"), &[], b"")
            .status,
        204
    );
}

fn public_keys_verify_their_own_signatures(backend: Backend) {
    let claims = json!({"sub": "dave", "exp": now() + 300});
    for (algorithm, key, other_key) in [
        (Algorithm::EdDSA, "ed25519", "other-ed25519"),
        (Algorithm::RS256, "rsa", "ed25519"),
        (Algorithm::ES256, "p256", "ed25519"),
    ] {
        let public = keys(&format!("{key}-public.pem"));
        let setup = Setup::new(backend, &["--jwt-public-key", public.to_str().unwrap()]);
        let token = signed(algorithm, claims.clone(), &format!("{key}-private.pem"));
        let created = create(&bearer(&setup.server, &token), "a.bin", 3);
        assert_eq!(created.status, 200, "{key}: {}", created.text());
        assert_eq!(created.json()["user"], "dave");
        let public_pem = std::fs::read_to_string(&public).unwrap();
        for refused in [
            eddsa(claims.clone(), &format!("{other_key}-private.pem")),
            // The algorithm is the key's: an HS256 token is refused, even
            // one whose secret is the public key itself.
            hs256(claims.clone(), SECRET),
            hs256(claims.clone(), &public_pem),
            unsigned(&claims),
        ] {
            let answer = create(&bearer(&setup.server, &refused), "b.bin", 3);
            assert_eq!(answer.status, 401, "{key}: {}", answer.text());
        }
    }
}

/// A token with `"alg": "none"` and no signature.
fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let part =
        |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(claims)
    )
}

both_backends!(
    app_tokens_stand_for_their_owner,
    public_keys_verify_their_own_signatures
);
