//! Dashboard users and login sessions on PostgreSQL (shared by every admin of a fleet, so any
//! admin serves any logged-in user).

use super::super::{NewSession, SessionRecord, StorageError};
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
