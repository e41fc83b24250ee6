//! Dashboard users and login sessions.
//!
//! WHY in the admin database: one file to back up, and `drosera-admin user add` works without a
//! running server. Passwords are stored only as argon2id PHC strings. A login session is a
//! random 256-bit token given to the browser in a cookie; the database keeps only its SHA-256, so
//! a copy of the database cannot be replayed as a cookie. Sessions expire after
//! [`SESSION_TTL_MS`], and at most [`MAX_SESSIONS`] are kept (the oldest go first). Reading the
//! password of `drosera-admin user add` is the command line's job (`crate::cli`).
//!
//! Per-user API tokens (`drosera-admin user token create|list|revoke`, issue 21) let scripts
//! read `/api/...` with `Authorization: Bearer TOKEN` instead of a session cookie. A token is
//! [`API_TOKEN_PREFIX`] and 256 random bits, shown once when created; the database keeps its
//! SHA-256 (256 random bits need no slow hash: there is nothing to guess), a public id to list
//! and revoke it by, and a note. A user has at most `[dashboard] api_tokens_per_user` live
//! tokens. Tokens are accepted only on `/api/...` (never for pages, the login or logout form),
//! so a token cannot be used to act through a browser's forms.

use crate::clock::now_ms;
use crate::storage::{ApiTokenRecord, NewApiToken, NewSession, Storage, StorageError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
pub const MAX_SESSIONS: i64 = 1000;
pub const MAX_NAME: usize = 64;
pub const MAX_PASSWORD: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("user name must be 1 to {MAX_NAME} characters of letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("password must be 8 to {MAX_PASSWORD} bytes")]
    BadPassword,
    #[error("cannot hash password: {0}")]
    Hash(String),
    #[error("no user {0:?} (create it with `drosera-admin user add`)")]
    NoUser(String),
    #[error("user {user:?} already has {max} live API tokens: revoke one (`drosera-admin user token revoke`) or raise [dashboard] api_tokens_per_user")]
    TooManyTokens { user: String, max: i64 },
    #[error("token note must be at most {MAX_TOKEN_NOTE} printable characters")]
    BadNote,
}

/// What every API token starts with (so a leaked one is recognisable, e.g. by secret scanners).
pub const API_TOKEN_PREFIX: &str = "drosera_";
/// Characters of a token's note.
pub const MAX_TOKEN_NOTE: usize = 100;

/// Creates an API token for `user` (who must exist); returns its id and the token, which is
/// shown once and never stored.
pub fn create_api_token(
    db: &dyn Storage,
    user: &str,
    note: &str,
    max_live: i64,
) -> Result<(String, String), UserError> {
    if note.chars().count() > MAX_TOKEN_NOTE || note.chars().any(char::is_control) {
        return Err(UserError::BadNote);
    }
    if !valid_name(user) || db.user_phc(user)?.is_none() {
        return Err(UserError::NoUser(user.to_string()));
    }
    let token = format!("{API_TOKEN_PREFIX}{}", random_token());
    let id = random_token()[..12].to_string();
    let t = NewApiToken { id: &id, user, name: note, token_sha256: &token_hash(&token), created_ms: now_ms() };
    if !db.create_api_token(&t, max_live)? {
        return Err(UserError::TooManyTokens { user: user.to_string(), max: max_live });
    }
    Ok((id, token))
}

/// Every API token of `user`, newest first.
pub fn api_tokens(db: &dyn Storage, user: &str) -> Result<Vec<ApiTokenRecord>, UserError> {
    Ok(db.api_tokens(user)?)
}

/// Revokes token `id` of `user`; false if there is no such live token.
pub fn revoke_api_token(db: &dyn Storage, user: &str, id: &str) -> Result<bool, UserError> {
    Ok(db.revoke_api_token(user, id, now_ms())?)
}

/// The token of an `Authorization` header value (`Bearer TOKEN`), if it has that shape: the
/// scheme is case-insensitive (RFC 7235), the token printable ASCII and at most 128 bytes
/// (ours are 72). Anything else is `None`: the request is refused like a wrong token.
pub fn bearer_token(header: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    let ok = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= 128
        && token.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(token)
}

/// The user a presented API token belongs to, if it is one and live.
pub fn api_token_user(db: &dyn Storage, token: &str) -> Result<Option<String>, UserError> {
    let Some(hex_part) = token.strip_prefix(API_TOKEN_PREFIX) else { return Ok(None) };
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    Ok(db.api_token_user(&token_hash(token), now_ms())?)
}

/// True for a name `add_user` accepts (check it before asking for a password).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Creates user `name` or replaces its password (ending its sessions). Returns true if the user
/// is new.
pub fn add_user(db: &dyn Storage, name: &str, password: &str) -> Result<bool, UserError> {
    if !valid_name(name) {
        return Err(UserError::BadName);
    }
    if password.len() < 8 || password.len() > MAX_PASSWORD {
        return Err(UserError::BadPassword);
    }
    let mut salt_bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| UserError::Hash(e.to_string()))?;
    let phc = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| UserError::Hash(e.to_string()))?
        .to_string();
    Ok(db.upsert_user(name, &phc, now_ms())?)
}

/// Checks a password. Unknown users cost the same argon2 work as known ones.
pub fn verify(db: &dyn Storage, name: &str, password: &str) -> Result<bool, UserError> {
    if name.len() > MAX_NAME || password.len() > MAX_PASSWORD {
        return Ok(false);
    }
    let phc = db.user_phc(name)?;
    // A fixed dummy hash keeps timing similar for unknown users.
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5r1n5kVh3D8Y1sT4rG2F9Yk8b4iR4vM2mOZpX0mH8Jw";
    let known = phc.is_some();
    let phc = phc.unwrap_or_else(|| DUMMY.to_string());
    let ok = match PasswordHash::new(&phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    };
    Ok(known && ok)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A logged-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub csrf: String,
}

/// Starts a session for `user`; returns the cookie token.
pub fn create_session(db: &dyn Storage, user: &str) -> Result<String, UserError> {
    let now = now_ms();
    let token = random_token();
    let hash = token_hash(&token);
    let csrf = random_token();
    let s = NewSession { token_sha256: &hash, user, csrf: &csrf, expires_ms: now + SESSION_TTL_MS };
    db.create_session(&s, now, MAX_SESSIONS)?;
    Ok(token)
}

/// The live session for a cookie token, if any.
pub fn session(db: &dyn Storage, token: &str) -> Result<Option<Session>, UserError> {
    if token.len() != 64 {
        return Ok(None);
    }
    Ok(db.session(&token_hash(token), now_ms())?.map(|s| Session { user: s.user, csrf: s.csrf }))
}

pub fn end_session(db: &dyn Storage, token: &str) -> Result<(), UserError> {
    Ok(db.end_session(&token_hash(token))?)
}

/// A fresh random value (for the login form's CSRF token).
pub fn new_nonce() -> String {
    random_token()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_and_sessions() {
        let conn = crate::storage::sqlite::open_in_memory().unwrap();
        assert!(add_user(&conn, "alice", "correct horse").unwrap());
        assert!(verify(&conn, "alice", "correct horse").unwrap());
        assert!(!verify(&conn, "alice", "wrong horse!").unwrap());
        assert!(!verify(&conn, "bob", "correct horse").unwrap());
        assert!(matches!(add_user(&conn, "bad name", "correct horse"), Err(UserError::BadName)));
        assert!(matches!(add_user(&conn, "alice", "short"), Err(UserError::BadPassword)));
        let t = create_session(&conn, "alice").unwrap();
        assert_eq!(session(&conn, &t).unwrap().unwrap().user, "alice");
        assert!(session(&conn, &"0".repeat(64)).unwrap().is_none());
        // changing the password ends sessions
        assert!(!add_user(&conn, "alice", "another horse").unwrap());
        assert!(session(&conn, &t).unwrap().is_none());
        let phc: String = conn.query_row("SELECT phc FROM users", [], |r| r.get(0)).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer_token(b"Bearer drosera_ab"), Some("drosera_ab"));
        assert_eq!(bearer_token(b"bearer  drosera_ab "), Some("drosera_ab"));
        for bad in [&b""[..], b"Bearer", b"Bearer ", b"Basic abc", b"Bearer a b", b"Bearer \xff", b"Bearer \x1b"] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
        assert_eq!(bearer_token(format!("Bearer {}", "a".repeat(129)).as_bytes()), None);
    }

    #[test]
    fn api_tokens_are_hashed_capped_and_revocable() {
        let conn = crate::storage::sqlite::open_in_memory().unwrap();
        assert!(matches!(create_api_token(&conn, "alice", "", 2), Err(UserError::NoUser(_))));
        add_user(&conn, "alice", "correct horse").unwrap();
        let (id, token) = create_api_token(&conn, "alice", "grafana", 2).unwrap();
        assert!(token.starts_with(API_TOKEN_PREFIX) && token.len() == API_TOKEN_PREFIX.len() + 64);
        assert_eq!(api_token_user(&conn, &token).unwrap().as_deref(), Some("alice"));
        // Only the hash is stored.
        let stored: String = conn.query_row("SELECT token_sha256 FROM api_tokens", [], |r| r.get(0)).unwrap();
        assert_ne!(stored, token);
        assert!(!stored.contains(&token[API_TOKEN_PREFIX.len()..]));
        // Wrong, malformed and unprefixed tokens name nobody.
        assert_eq!(api_token_user(&conn, &format!("{API_TOKEN_PREFIX}{}", "0".repeat(64))).unwrap(), None);
        assert_eq!(api_token_user(&conn, &token[API_TOKEN_PREFIX.len()..]).unwrap(), None);
        assert_eq!(api_token_user(&conn, "drosera_zz").unwrap(), None);
        create_api_token(&conn, "alice", "", 2).unwrap();
        assert!(matches!(create_api_token(&conn, "alice", "", 2), Err(UserError::TooManyTokens { max: 2, .. })));
        assert!(matches!(create_api_token(&conn, "alice", "a\nb", 2), Err(UserError::BadNote)));
        let list = api_tokens(&conn, "alice").unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().any(|t| t.id == id && t.name == "grafana" && t.last_used_ms > 0));
        assert!(!revoke_api_token(&conn, "bob", &id).unwrap(), "another user's token");
        assert!(revoke_api_token(&conn, "alice", &id).unwrap());
        assert!(!revoke_api_token(&conn, "alice", &id).unwrap(), "already revoked");
        assert_eq!(api_token_user(&conn, &token).unwrap(), None);
        // A revoked token frees its place.
        create_api_token(&conn, "alice", "", 2).unwrap();
    }
}
