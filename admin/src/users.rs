//! Dashboard users and login sessions.
//!
//! WHY in the admin database: one file to back up, and `drosera-admin user add` works without a
//! running server. Passwords are stored only as argon2id PHC strings. A login session is a
//! random 256-bit token given to the browser in a cookie; the database keeps only its SHA-256, so
//! a copy of the database cannot be replayed as a cookie. Sessions expire after
//! [`SESSION_TTL_MS`], and at most [`MAX_SESSIONS`] are kept (the oldest go first).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
pub const MAX_SESSIONS: i64 = 1000;
pub const MAX_NAME: usize = 64;
pub const MAX_PASSWORD: usize = 1024;

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    name       TEXT PRIMARY KEY,
    phc        TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    token_sha256 TEXT PRIMARY KEY,
    user         TEXT NOT NULL,
    -- random per-session value the login and logout forms must echo (CSRF)
    csrf         TEXT NOT NULL,
    expires_ms   INTEGER NOT NULL
);
"#;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("user name must be 1 to {MAX_NAME} characters of letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("password must be 8 to {MAX_PASSWORD} bytes")]
    BadPassword,
    #[error("cannot hash password: {0}")]
    Hash(String),
}

pub fn migrate(conn: &Connection) -> Result<(), UserError> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Creates user `name` or replaces its password. Returns true if the user is new.
pub fn add_user(conn: &Connection, name: &str, password: &str) -> Result<bool, UserError> {
    migrate(conn)?;
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
    let existed =
        conn.query_row("SELECT 1 FROM users WHERE name = ?1", params![name], |_| Ok(())).optional()?.is_some();
    conn.execute(
        "INSERT INTO users(name, phc, created_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET phc = excluded.phc",
        params![name, phc, crate::analytics::now_ms()],
    )?;
    // A new password ends that user's existing sessions.
    conn.execute("DELETE FROM dashboard_sessions WHERE user = ?1", params![name])?;
    Ok(!existed)
}

/// Checks a password. Unknown users cost the same argon2 work as known ones.
pub fn verify(conn: &Connection, name: &str, password: &str) -> Result<bool, UserError> {
    if name.len() > MAX_NAME || password.len() > MAX_PASSWORD {
        return Ok(false);
    }
    let phc: Option<String> =
        conn.query_row("SELECT phc FROM users WHERE name = ?1", params![name], |r| r.get(0)).optional()?;
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
pub fn create_session(conn: &Connection, user: &str) -> Result<String, UserError> {
    let now = crate::analytics::now_ms();
    conn.execute("DELETE FROM dashboard_sessions WHERE expires_ms <= ?1", params![now])?;
    conn.execute(
        "DELETE FROM dashboard_sessions WHERE token_sha256 IN
           (SELECT token_sha256 FROM dashboard_sessions ORDER BY expires_ms DESC LIMIT -1 OFFSET ?1)",
        params![MAX_SESSIONS - 1],
    )?;
    let token = random_token();
    conn.execute(
        "INSERT INTO dashboard_sessions(token_sha256, user, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash(&token), user, random_token(), now + SESSION_TTL_MS],
    )?;
    Ok(token)
}

/// The live session for a cookie token, if any.
pub fn session(conn: &Connection, token: &str) -> Result<Option<Session>, UserError> {
    if token.len() != 64 {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT user, csrf FROM dashboard_sessions WHERE token_sha256 = ?1 AND expires_ms > ?2",
            params![token_hash(token), crate::analytics::now_ms()],
            |r| Ok(Session { user: r.get(0)?, csrf: r.get(1)? }),
        )
        .optional()?)
}

pub fn end_session(conn: &Connection, token: &str) -> Result<(), UserError> {
    conn.execute("DELETE FROM dashboard_sessions WHERE token_sha256 = ?1", params![token_hash(token)])?;
    Ok(())
}

/// A fresh random value (for the login form's CSRF token).
pub fn new_nonce() -> String {
    random_token()
}

/// `drosera-admin user add NAME`: creates a dashboard user or sets a new password, read from
/// standard input (first line), or prompted for twice without echo on a terminal.
pub fn add_command(db_path: &std::path::Path, name: &str) -> anyhow::Result<()> {
    if !valid_name(name) {
        return Err(UserError::BadName.into());
    }
    let password = read_password()?;
    let conn = crate::db::open(db_path)?;
    let new = add_user(&conn, name, &password)?;
    eprintln!("{} dashboard user {name}", if new { "created" } else { "set a new password for" });
    Ok(())
}

fn read_line_capped() -> anyhow::Result<String> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    std::io::stdin().lock().take(MAX_PASSWORD as u64 + 2).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn read_password() -> anyhow::Result<String> {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return read_line_capped();
    }
    let stty = |arg: &str| {
        std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status().ok();
    };
    stty("-echo");
    let result = (|| -> anyhow::Result<String> {
        eprint!("Password: ");
        std::io::stderr().flush()?;
        let a = read_line_capped()?;
        eprint!("\nRepeat password: ");
        std::io::stderr().flush()?;
        let b = read_line_capped()?;
        eprintln!();
        anyhow::ensure!(a == b, "the passwords differ");
        Ok(a)
    })();
    stty("echo");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_and_sessions() {
        let conn = Connection::open_in_memory().unwrap();
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
