//! Dashboard users and login sessions.
//!
//! WHY in the admin database: one file to back up, and `drosera-admin user add` works without a
//! running server. Passwords are stored only as argon2id PHC strings. A login session is a
//! random 256-bit token given to the browser in a cookie; the database keeps only its SHA-256, so
//! a copy of the database cannot be replayed as a cookie. Sessions expire after
//! [`SESSION_TTL_MS`], and at most [`MAX_SESSIONS`] are kept (the oldest go first). Reading the
//! password of `drosera-admin user add` is the command line's job (`crate::cli`).

use crate::clock::now_ms;
use crate::storage::{NewSession, Storage, StorageError};
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
}
