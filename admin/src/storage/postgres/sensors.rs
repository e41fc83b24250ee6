//! Sensor rows on PostgreSQL: enrollment, revocation, contact, the listing.

use super::super::{Enrollment, Registered, SensorRecord, StorageError};
use super::Postgres;

pub fn enrollment(db: &Postgres, name: &str) -> Result<Option<Enrollment>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let row = c
            .query_opt("SELECT id, revoked, cert_sha256, high_water_seq FROM sensors WHERE name = $1", &[&name])
            .await?;
        Ok(row.map(|r| Enrollment {
            sensor_id: r.get(0),
            revoked: r.get(1),
            cert_sha256: r.get(2),
            high_water_seq: r.get(3),
        }))
    })
}

pub fn register(db: &Postgres, name: &str, cert_sha256: &str, now_ms: i64) -> Result<Registered, StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let tx = c.transaction().await?;
        // A new name is inserted (or nothing happens if another admin just did); then the row is
        // locked and decided on, so two admins enrolling one name cannot both succeed.
        tx.execute(
            "INSERT INTO sensors(name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &now_ms],
        )
        .await?;
        let r = tx.query_one("SELECT revoked, cert_sha256 FROM sensors WHERE name = $1 FOR UPDATE", &[&name]).await?;
        let (revoked, cert): (bool, String) = (r.get(0), r.get(1));
        if !revoked && !cert.is_empty() {
            return Ok(Registered::AlreadyActive);
        }
        tx.execute(
            "UPDATE sensors SET cert_sha256 = $2, revoked = false, created_ms = $3 WHERE name = $1",
            &[&name, &cert_sha256, &now_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(Registered::Enrolled)
    })
}

pub fn revoke(db: &Postgres, name: &str) -> Result<bool, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        Ok(c.execute("UPDATE sensors SET revoked = true WHERE name = $1", &[&name]).await? > 0)
    })
}

pub fn record_hello(db: &Postgres, sensor_id: i64, schema_version: u16, now_ms: i64) -> Result<(), StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        c.execute(
            "UPDATE sensors SET last_contact_ms = $2, schema_version = $3 WHERE id = $1",
            &[&sensor_id, &now_ms, &i64::from(schema_version)],
        )
        .await?;
        Ok(())
    })
}

pub fn touch(db: &Postgres, sensor_ids: &[i64], now_ms: i64) -> Result<(), StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        c.execute("UPDATE sensors SET last_contact_ms = $2 WHERE id = ANY($1)", &[&sensor_ids, &now_ms]).await?;
        Ok(())
    })
}

pub fn list(db: &Postgres) -> Result<Vec<SensorRecord>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let rows = c
            .query(
                "SELECT name, revoked, created_ms, last_contact_ms, high_water_seq, schema_version, evicted_total,
                        shed_total, health_json, events_stored
                 FROM sensors ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let health: Option<String> = r.get(8);
                SensorRecord {
                    name: r.get(0),
                    revoked: r.get(1),
                    created_ms: r.get(2),
                    last_contact_ms: r.get(3),
                    high_water_seq: r.get(4),
                    schema_version: r.get(5),
                    evicted_total: r.get(6),
                    shed_total: r.get(7),
                    health: health.and_then(|h| serde_json::from_str(&h).ok()),
                    events: r.get(9),
                }
            })
            .collect())
    })
}
