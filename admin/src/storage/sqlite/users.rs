//! Dashboard users and login sessions.

use super::super::{ApiTokenRecord, NewApiToken, NewSession, SessionRecord, StorageError};
use rusqlite::{params, Connection, OptionalExtension};

pub fn upsert(conn: &Connection, name: &str, phc: &str, now_ms: i64) -> Result<bool, StorageError> {
    let tx = conn.unchecked_transaction()?;
    let existed = tx.query_row("SELECT 1 FROM users WHERE name = ?1", params![name], |_| Ok(())).optional()?.is_some();
    tx.execute(
        "INSERT INTO users(name, phc, created_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET phc = excluded.phc",
        params![name, phc, now_ms],
    )?;
    // A new password ends that user's existing sessions.
    tx.execute("DELETE FROM dashboard_sessions WHERE user = ?1", params![name])?;
    tx.commit()?;
    Ok(!existed)
}

pub fn phc(conn: &Connection, name: &str) -> Result<Option<String>, StorageError> {
    Ok(conn.query_row("SELECT phc FROM users WHERE name = ?1", params![name], |r| r.get(0)).optional()?)
}

pub fn create_session(
    conn: &Connection,
    s: &NewSession<'_>,
    now_ms: i64,
    max_sessions: i64,
) -> Result<(), StorageError> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM dashboard_sessions WHERE expires_ms <= ?1", params![now_ms])?;
    tx.execute(
        "DELETE FROM dashboard_sessions WHERE token_sha256 IN
           (SELECT token_sha256 FROM dashboard_sessions ORDER BY expires_ms DESC LIMIT -1 OFFSET ?1)",
        params![max_sessions - 1],
    )?;
    tx.execute(
        "INSERT INTO dashboard_sessions(token_sha256, user, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![s.token_sha256, s.user, s.csrf, s.expires_ms],
    )?;
    tx.commit()?;
    Ok(())
}

pub fn session(conn: &Connection, token_sha256: &str, now_ms: i64) -> Result<Option<SessionRecord>, StorageError> {
    Ok(conn
        .query_row(
            "SELECT user, csrf FROM dashboard_sessions WHERE token_sha256 = ?1 AND expires_ms > ?2",
            params![token_sha256, now_ms],
            |r| Ok(SessionRecord { user: r.get(0)?, csrf: r.get(1)? }),
        )
        .optional()?)
}

pub fn end_session(conn: &Connection, token_sha256: &str) -> Result<(), StorageError> {
    conn.execute("DELETE FROM dashboard_sessions WHERE token_sha256 = ?1", params![token_sha256])?;
    Ok(())
}

pub fn create_api_token(conn: &Connection, t: &NewApiToken<'_>, max_live: i64) -> Result<bool, StorageError> {
    let tx = conn.unchecked_transaction()?;
    let live: i64 =
        tx.query_row("SELECT COUNT(*) FROM api_tokens WHERE user = ?1 AND revoked_ms = 0", params![t.user], |r| {
            r.get(0)
        })?;
    if live >= max_live {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO api_tokens(id, user, name, token_sha256, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![t.id, t.user, t.name, t.token_sha256, t.created_ms],
    )?;
    tx.commit()?;
    Ok(true)
}

pub fn api_tokens(conn: &Connection, user: &str) -> Result<Vec<ApiTokenRecord>, StorageError> {
    let mut st = conn.prepare(
        "SELECT id, user, name, created_ms, last_used_ms, revoked_ms FROM api_tokens WHERE user = ?1
         ORDER BY created_ms DESC, id",
    )?;
    let rows = st.query_map(params![user], |r| {
        Ok(ApiTokenRecord {
            id: r.get(0)?,
            user: r.get(1)?,
            name: r.get(2)?,
            created_ms: r.get(3)?,
            last_used_ms: r.get(4)?,
            revoked_ms: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn revoke_api_token(conn: &Connection, user: &str, id: &str, now_ms: i64) -> Result<bool, StorageError> {
    let n = conn.execute(
        "UPDATE api_tokens SET revoked_ms = ?3 WHERE user = ?1 AND id = ?2 AND revoked_ms = 0",
        params![user, id, now_ms.max(1)],
    )?;
    Ok(n > 0)
}

pub fn api_token_user(conn: &Connection, token_sha256: &str, now_ms: i64) -> Result<Option<String>, StorageError> {
    conn.execute(
        "UPDATE api_tokens SET last_used_ms = ?2
         WHERE token_sha256 = ?1 AND revoked_ms = 0 AND last_used_ms < ?2 - 60000",
        params![token_sha256, now_ms],
    )?;
    Ok(conn
        .query_row(
            "SELECT user FROM api_tokens WHERE token_sha256 = ?1 AND revoked_ms = 0",
            params![token_sha256],
            |r| r.get(0),
        )
        .optional()?)
}
