//! Placeholder until the ssh emulation lands: reads the client's first input and closes.

use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};

pub async fn handle(session: &mut Session, _svc: &ServiceSection) -> SessionResult<()> {
    let mut buf = [0u8; 512];
    session.read_some(&mut buf).await.map(|_| ())
}
