//! One SMB login decision, the same for SMB1 (extended and basic security) and SMB2.
//!
//! WHY here and not in each dialect: the decision is the sensor's one login policy
//! (`Session::check_login_with`), fed with a check of the client's NTLMv2 or NTLMv1 response
//! instead of a password (NTLM never sends one, but the challenge is ours, so the response for
//! each accept list password can be computed and compared). A login the policy lets in reaches the disk
//! shares, so psexec-style file drops arrive; everything is recorded as a `Login` event with the
//! response as a crackable hashcat line. Anonymous (null) sessions are let in without an event,
//! as Windows does, but they reach `IPC$` only.

use super::ntlm::{ntlmv1_proves, ntlmv2_proves, NtlmAuth};
use crate::session::Session;
use drosera_uplink::event::Detail;

/// Who a session setup made the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// A null session: no user name.
    Anonymous,
    /// A named user the policy let in.
    User(String),
    /// Refused (recorded).
    Refused,
}

impl LoginOutcome {
    pub(crate) fn succeeded(&self) -> bool {
        !matches!(self, LoginOutcome::Refused)
    }
}

/// Decides and records one login. `method` names the way it arrived (`ntlmssp`, `smb1-basic`),
/// `dialect` the SMB dialect. Also returns the password the response proved, when an accept
/// entry named it (SMB2 derives its signing key from it).
pub(crate) fn decide(
    session: &Session,
    auth: &NtlmAuth,
    challenge: &[u8; 8],
    method: &str,
    dialect: &str,
) -> (LoginOutcome, Option<String>) {
    if auth.user.is_empty() {
        return (LoginOutcome::Anonymous, None);
    }
    let proven = std::cell::RefCell::new(None);
    let success = session.check_login_with(&auth.user, |password| {
        let yes = ntlmv2_proves(auth, challenge, password) || ntlmv1_proves(auth, challenge, password);
        if yes {
            *proven.borrow_mut() = Some(password.to_string());
        }
        yes
    });
    let mut extra = vec![("domain".to_string(), auth.domain.clone())];
    if !auth.workstation.is_empty() {
        extra.push(("workstation".into(), auth.workstation.clone()));
    }
    extra.push(("method".into(), method.into()));
    extra.push(("dialect".into(), dialect.into()));
    session.emit(Detail::Login { username: auth.user.clone(), secret: auth.secret(challenge), success, extra });
    if success {
        (LoginOutcome::User(auth.user.clone()), proven.into_inner())
    } else {
        (LoginOutcome::Refused, None)
    }
}
