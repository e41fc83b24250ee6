//! Enrolled sensors: registration, revocation, admission of a connection, and the listing.
//!
//! WHY in the database and checked on every connection: revocation must take effect at the
//! sensor's next handshake without restarting the admin, and `sensor add`/`sensor revoke` run as
//! separate processes while `serve` runs. The TLS layer proves the certificate was signed by our
//! CA; admission then requires that the name is enrolled, not revoked, and that the certificate is
//! exactly the one issued to it (its SHA-256), so a re-enrolled sensor's old certificate is
//! refused too.

use crate::storage::{Registered, Storage, StorageError};
use drosera_uplink::event::Health;
use drosera_uplink::tls::PeerIdentity;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "sensor {0:?} is already enrolled; revoke it first (`drosera-admin sensor revoke {0}`) or choose another name"
    )]
    Exists(String),
    #[error("no sensor named {0:?} is enrolled (see `drosera-admin sensor list`)")]
    NotFound(String),
    #[error(
        "{0:?} is not a valid sensor name: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    BadName(String),
}

/// Fails with [`SensorError::Exists`] if `name` cannot be enrolled now (an active sensor with a
/// certificate has it), or [`SensorError::BadName`].
pub fn check_enrollable(db: &dyn Storage, name: &str) -> Result<(), SensorError> {
    if !drosera_uplink::tls::valid_sensor_name(name) {
        return Err(SensorError::BadName(name.to_string()));
    }
    match db.enrollment(name)? {
        Some(e) if !e.revoked && !e.cert_sha256.is_empty() => Err(SensorError::Exists(name.to_string())),
        _ => Ok(()),
    }
}

/// Records that `name` was issued the certificate with fingerprint `cert_sha256`. A revoked
/// sensor may be enrolled again (with a new certificate); an active one may not.
pub fn register(db: &dyn Storage, name: &str, cert_sha256: &str, now_ms: i64) -> Result<(), SensorError> {
    if !drosera_uplink::tls::valid_sensor_name(name) {
        return Err(SensorError::BadName(name.to_string()));
    }
    match db.register_sensor(name, cert_sha256, now_ms)? {
        Registered::Enrolled => Ok(()),
        Registered::AlreadyActive => Err(SensorError::Exists(name.to_string())),
    }
}

/// Revokes `name`: its next connection (and its next batch on an open connection) is refused.
pub fn revoke(db: &dyn Storage, name: &str) -> Result<(), SensorError> {
    if !db.revoke_sensor(name)? {
        return Err(SensorError::NotFound(name.to_string()));
    }
    Ok(())
}

/// The outcome of checking a connecting sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Accepted { sensor_id: i64, high_water_seq: u64 },
    Refused(String),
}

/// Checks an authenticated peer against the enrollment records.
pub fn admit(db: &dyn Storage, peer: &PeerIdentity) -> Result<Admission, SensorError> {
    Ok(match db.enrollment(&peer.name)? {
        None => Admission::Refused(format!("sensor {:?} is not enrolled at this admin", peer.name)),
        Some(e) if e.revoked => Admission::Refused(format!("sensor {:?} is revoked", peer.name)),
        Some(e) if e.cert_sha256 != peer.cert_sha256 => Admission::Refused(format!(
            "certificate of sensor {:?} is not the one enrolled (replaced or re-enrolled)",
            peer.name
        )),
        Some(e) => Admission::Accepted { sensor_id: e.sensor_id, high_water_seq: e.high_water_seq.max(0) as u64 },
    })
}

/// One line of `drosera-admin sensor list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SensorInfo {
    pub name: String,
    pub revoked: bool,
    pub created_ms: i64,
    pub last_contact_ms: Option<i64>,
    pub high_water_seq: u64,
    pub schema_version: u16,
    pub events: u64,
    pub evicted_total: u64,
    pub shed_total: u64,
    pub health: Option<Health>,
    /// The release version the sensor last said it runs (filled from `[updates] dir/running/`).
    pub version: Option<String>,
}

/// Every sensor the admin knows, by name.
pub fn list(db: &dyn Storage) -> Result<Vec<SensorInfo>, SensorError> {
    Ok(db
        .list_sensors()?
        .into_iter()
        .map(|s| SensorInfo {
            name: s.name,
            revoked: s.revoked,
            created_ms: s.created_ms,
            last_contact_ms: s.last_contact_ms,
            high_water_seq: s.high_water_seq.max(0) as u64,
            schema_version: s.schema_version.clamp(0, u16::MAX as i64) as u16,
            evicted_total: s.evicted_total.max(0) as u64,
            shed_total: s.shed_total.max(0) as u64,
            health: s.health,
            events: s.events.max(0) as u64,
            version: None,
        })
        .collect())
}

/// Human-readable table of [`list`].
pub fn render(list: &[SensorInfo], now_ms: i64) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:<16} {:>12} {:>10} {:>10} {:>10} {:<16}\n",
        "SENSOR", "STATE", "LAST CONTACT", "EVENTS", "BACKLOG", "EVICTED", "SHED", "VERSION"
    );
    for s in list {
        let state = if s.revoked { "revoked" } else { "active" };
        let contact = match s.last_contact_ms {
            None => "never".to_string(),
            Some(t) => ago(now_ms.saturating_sub(t)),
        };
        let backlog = s.health.as_ref().map(|h| h.backlog_events.to_string()).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<24} {:<8} {:<16} {:>12} {:>10} {:>10} {:>10} {:<16}\n",
            s.name,
            state,
            contact,
            s.events,
            backlog,
            s.evicted_total,
            s.shed_total,
            s.version.as_deref().unwrap_or("-")
        ));
    }
    out
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, cert: &str) -> PeerIdentity {
        PeerIdentity { name: name.into(), cert_sha256: cert.into() }
    }

    #[test]
    fn enroll_admit_revoke_reenroll() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::storage::sqlite::open(&dir.path().join("a.db")).unwrap();
        assert!(matches!(admit(&conn, &peer("pi", "aa")).unwrap(), Admission::Refused(_)));
        register(&conn, "pi", "aa", 1).unwrap();
        assert!(matches!(register(&conn, "pi", "bb", 2), Err(SensorError::Exists(_))));
        assert!(matches!(register(&conn, "../x", "bb", 2), Err(SensorError::BadName(_))));
        assert!(matches!(admit(&conn, &peer("pi", "aa")).unwrap(), Admission::Accepted { high_water_seq: 0, .. }));
        assert!(matches!(admit(&conn, &peer("pi", "bb")).unwrap(), Admission::Refused(r) if r.contains("not the one")));
        revoke(&conn, "pi").unwrap();
        assert!(matches!(admit(&conn, &peer("pi", "aa")).unwrap(), Admission::Refused(r) if r.contains("revoked")));
        assert!(matches!(revoke(&conn, "nope"), Err(SensorError::NotFound(_))));
        register(&conn, "pi", "cc", 3).unwrap();
        assert!(matches!(admit(&conn, &peer("pi", "aa")).unwrap(), Admission::Refused(_)));
        assert!(matches!(admit(&conn, &peer("pi", "cc")).unwrap(), Admission::Accepted { .. }));
        let l = list(&conn).unwrap();
        assert_eq!(l.len(), 1);
        assert!(!l[0].revoked);
        assert!(render(&l, 10).contains("never"));
    }
}
