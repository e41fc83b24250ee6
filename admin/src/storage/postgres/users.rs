//! Dashboard users and login sessions on PostgreSQL (shared by every admin of a fleet, so any
//! admin serves any logged-in user).

use super::super::{ApiTokenRecord, NewApiToken, NewSession, SessionRecord, StorageError};
use super::Postgres;

pub fn upsert(db: &Postgres, name: &str, phc: &str, now_ms: i64) -> Result<bool, StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let tx = c.transaction().await?;
        // xmax = 0 only for a row this statement inserted.
        let new: bool = tx
            .query_one(
                "INSERT INTO users(name, phc, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET phc = excluded.phc RETURNING (xmax = 0)",
                &[&name, &phc, &now_ms],
            )
            .await?
            .get(0);
        // A new password ends that user's existing sessions.
        tx.execute("DELETE FROM dashboard_sessions WHERE \"user\" = $1", &[&name]).await?;
        tx.commit().await?;
        Ok(new)
    })
}

pub fn phc(db: &Postgres, name: &str) -> Result<Option<String>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        Ok(c.query_opt("SELECT phc FROM users WHERE name = $1", &[&name]).await?.map(|r| r.get(0)))
    })
}

pub fn create_session(db: &Postgres, s: &NewSession<'_>, now_ms: i64, max_sessions: i64) -> Result<(), StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM dashboard_sessions WHERE expires_ms <= $1", &[&now_ms]).await?;
        tx.execute(
            "DELETE FROM dashboard_sessions WHERE token_sha256 IN
               (SELECT token_sha256 FROM dashboard_sessions ORDER BY expires_ms DESC OFFSET $1)",
            &[&(max_sessions - 1).max(0)],
        )
        .await?;
        tx.execute(
            "INSERT INTO dashboard_sessions(token_sha256, \"user\", csrf, expires_ms) VALUES ($1, $2, $3, $4)",
            &[&s.token_sha256, &s.user, &s.csrf, &s.expires_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    })
}

pub fn session(db: &Postgres, token_sha256: &str, now_ms: i64) -> Result<Option<SessionRecord>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let row = c
            .query_opt(
                "SELECT \"user\", csrf FROM dashboard_sessions WHERE token_sha256 = $1 AND expires_ms > $2",
                &[&token_sha256, &now_ms],
            )
            .await?;
        Ok(row.map(|r| SessionRecord { user: r.get(0), csrf: r.get(1) }))
    })
}

pub fn end_session(db: &Postgres, token_sha256: &str) -> Result<(), StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        c.execute("DELETE FROM dashboard_sessions WHERE token_sha256 = $1", &[&token_sha256]).await?;
        Ok(())
    })
}

pub fn create_api_token(db: &Postgres, t: &NewApiToken<'_>, max_live: i64) -> Result<bool, StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let tx = c.transaction().await?;
        // Two admins creating tokens for one user at once: the user's row serializes them.
        tx.execute("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&t.user]).await?;
        let live: i64 = tx
            .query_one("SELECT COUNT(*) FROM api_tokens WHERE \"user\" = $1 AND revoked_ms = 0", &[&t.user])
            .await?
            .get(0);
        if live >= max_live {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO api_tokens(id, \"user\", name, token_sha256, created_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&t.id, &t.user, &t.name, &t.token_sha256, &t.created_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    })
}

pub fn api_tokens(db: &Postgres, user: &str) -> Result<Vec<ApiTokenRecord>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let rows = c
            .query(
                "SELECT id, \"user\", name, created_ms, last_used_ms, revoked_ms FROM api_tokens
                 WHERE \"user\" = $1 ORDER BY created_ms DESC, id",
                &[&user],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ApiTokenRecord {
                id: r.get(0),
                user: r.get(1),
                name: r.get(2),
                created_ms: r.get(3),
                last_used_ms: r.get(4),
                revoked_ms: r.get(5),
            })
            .collect())
    })
}

pub fn revoke_api_token(db: &Postgres, user: &str, id: &str, now_ms: i64) -> Result<bool, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let n = c
            .execute(
                "UPDATE api_tokens SET revoked_ms = $3 WHERE \"user\" = $1 AND id = $2 AND revoked_ms = 0",
                &[&user, &id, &now_ms.max(1)],
            )
            .await?;
        Ok(n > 0)
    })
}

pub fn api_token_user(db: &Postgres, token_sha256: &str, now_ms: i64) -> Result<Option<String>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        c.execute(
            "UPDATE api_tokens SET last_used_ms = $2::BIGINT
             WHERE token_sha256 = $1 AND revoked_ms = 0 AND last_used_ms < $2::BIGINT - 60000",
            &[&token_sha256, &now_ms],
        )
        .await?;
        let row = c
            .query_opt("SELECT \"user\" FROM api_tokens WHERE token_sha256 = $1 AND revoked_ms = 0", &[&token_sha256])
            .await?;
        Ok(row.map(|r| r.get(0)))
    })
}
