//! Address labels and the raw-events mark a relabel needs (`crate::labels`), shared by every
//! admin of a fleet.

use super::super::{LabelRecord, StorageError};
use super::Postgres;

pub fn labels(db: &Postgres) -> Result<Vec<LabelRecord>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let rows = c.query("SELECT cidr, label, note, created_ms FROM labels ORDER BY cidr", &[]).await?;
        Ok(rows
            .iter()
            .map(|r| LabelRecord { cidr: r.get(0), label: r.get(1), note: r.get(2), created_ms: r.get(3) })
            .collect())
    })
}

pub fn put_label(db: &Postgres, rec: &LabelRecord, max: u32) -> Result<bool, StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let tx = c.transaction().await?;
        // One writer of the table at a time, so two admins never both take the last place.
        tx.execute("LOCK TABLE labels IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
        let exists = tx.query_opt("SELECT 1 FROM labels WHERE cidr = $1", &[&rec.cidr]).await?.is_some();
        let n: i64 = tx.query_one("SELECT COUNT(*) FROM labels", &[]).await?.get(0);
        if !exists && n >= i64::from(max) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO labels(cidr, label, note, created_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (cidr) DO UPDATE SET label = excluded.label, note = excluded.note",
            &[&rec.cidr, &rec.label, &rec.note, &rec.created_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    })
}

pub fn remove_label(db: &Postgres, cidr: &str) -> Result<bool, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        Ok(c.execute("DELETE FROM labels WHERE cidr = $1", &[&cidr]).await? > 0)
    })
}

pub fn raw_from(db: &Postgres) -> Result<i64, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        Ok(c.query_opt("SELECT raw_from_ms FROM label_state WHERE id = 1", &[]).await?.map(|r| r.get(0)).unwrap_or(0))
    })
}

pub fn set_raw_from(db: &Postgres, ms: i64) -> Result<(), StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        c.execute("UPDATE label_state SET raw_from_ms = GREATEST(raw_from_ms, $1) WHERE id = 1", &[&ms]).await?;
        Ok(())
    })
}
