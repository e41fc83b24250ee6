//! Which logins succeed: one policy for every service that lets attackers "in".
//!
//! WHY: a honeypot that accepts every password is found at once (hydra reports "16 valid
//! passwords" and stops trying those users; scanners list "anonymous FTP allowed" on every
//! address), and one that refuses everything never sees the dropper that follows a login. So,
//! like Cowrie's user database, a login succeeds only when
//! 1. the source address has already been refused `refuse_first` times (by any service), and
//! 2. the pair matches an entry of `accept` (`user:password`, `*` for any user or any password,
//!    a leading `!` on the password refusing that one: `root:!root` accepts root with every
//!    password but "root").
//!
//! Everything else is refused, so brute forcers keep going and every pair they send is recorded,
//! while the weak pairs that bots actually use still open a shell. Attempts are counted per
//! source address in a bounded table (`max_sources`); when it is full the oldest entries are
//! dropped (an address seen again then starts over, which only delays its success).

use crate::config::CredentialsSection;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// One parsed `accept` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Any,
    Exactly(String),
    AnyBut(String),
}

impl Matcher {
    fn parse(s: &str, negatable: bool) -> Matcher {
        match s {
            "*" => Matcher::Any,
            _ if negatable && s.starts_with('!') => Matcher::AnyBut(s[1..].to_string()),
            _ => Matcher::Exactly(s.to_string()),
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Exactly(x) => x == v,
            Matcher::AnyBut(x) => x != v,
        }
    }
}

/// An entry of `accept` that is not `user:password`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("entry {index} ({entry:?}) is not user:password")]
pub struct BadEntry {
    pub index: usize,
    pub entry: String,
}

/// Parses the `accept` list (the config validation calls this too).
fn parse_accept(list: &[String]) -> Result<Vec<(Matcher, Matcher)>, BadEntry> {
    list.iter()
        .enumerate()
        .map(|(index, e)| match e.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok((Matcher::parse(u, false), Matcher::parse(p, true))),
            _ => Err(BadEntry { index, entry: e.clone() }),
        })
        .collect()
}

/// Checks an `accept` list without building a policy.
pub fn validate_accept(list: &[String]) -> Result<(), BadEntry> {
    parse_accept(list).map(|_| ())
}

struct Attempts {
    refused: HashMap<IpAddr, u32>,
    /// Insertion order of `refused`, for dropping the oldest when full.
    order: VecDeque<IpAddr>,
}

/// The sensor-wide login policy (shared by every service).
pub struct CredentialPolicy {
    refuse_first: u32,
    accept: Vec<(Matcher, Matcher)>,
    max_sources: usize,
    attempts: Mutex<Attempts>,
}

impl std::fmt::Debug for CredentialPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialPolicy").field("refuse_first", &self.refuse_first).finish()
    }
}

impl CredentialPolicy {
    pub fn new(cfg: &CredentialsSection) -> Result<CredentialPolicy, BadEntry> {
        Ok(CredentialPolicy {
            refuse_first: cfg.refuse_first,
            accept: parse_accept(&cfg.accept)?,
            max_sources: cfg.max_sources.max(1),
            attempts: Mutex::new(Attempts { refused: HashMap::new(), order: VecDeque::new() }),
        })
    }

    /// A policy that refuses every login (tests, and services that never let anyone in).
    pub fn refuse_all() -> CredentialPolicy {
        CredentialPolicy {
            refuse_first: u32::MAX,
            accept: Vec::new(),
            max_sources: 1,
            attempts: Mutex::new(Attempts { refused: HashMap::new(), order: VecDeque::new() }),
        }
    }

    /// Decides one login attempt from `src` and counts it. True: let the attacker in.
    pub fn check(&self, src: IpAddr, user: &str, password: &str) -> bool {
        self.check_with(src, user, |candidate| candidate == password)
    }

    /// As [`check`](Self::check), for a login whose password the service never sees, only a
    /// proof of it (an NTLM challenge response): `proves(candidate)` says whether the client's
    /// proof was made from the password `candidate`. It is asked only for the passwords that
    /// accept entries matching `user` name (`*` accepts any proof, `!pw` any proof not of pw),
    /// so the policy decides exactly as if it had the password.
    pub fn check_with(&self, src: IpAddr, user: &str, proves: impl Fn(&str) -> bool) -> bool {
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let refused_before = a.refused.get(&src).copied().unwrap_or(0);
        let listed = self.accept.iter().any(|(u, p)| {
            u.matches(user)
                && match p {
                    Matcher::Any => true,
                    Matcher::Exactly(x) => proves(x),
                    Matcher::AnyBut(x) => !proves(x),
                }
        });
        if refused_before >= self.refuse_first && listed {
            return true;
        }
        if !a.refused.contains_key(&src) {
            while a.refused.len() >= self.max_sources {
                match a.order.pop_front() {
                    Some(old) => {
                        a.refused.remove(&old);
                    }
                    None => break,
                }
            }
            a.order.push_back(src);
        }
        let n = a.refused.entry(src).or_insert(0);
        *n = n.saturating_add(1);
        false
    }

    /// Source addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.attempts.lock().unwrap_or_else(|e| e.into_inner()).refused.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(refuse_first: u32, accept: &[&str], max_sources: usize) -> CredentialPolicy {
        CredentialPolicy::new(&CredentialsSection {
            refuse_first,
            accept: accept.iter().map(|s| s.to_string()).collect(),
            max_sources,
        })
        .unwrap()
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn weak_pairs_succeed_only_after_the_first_refusals() {
        let p = policy(2, &["root:admin"], 10);
        assert!(!p.check(ip(1), "root", "admin"));
        assert!(!p.check(ip(1), "root", "x"));
        assert!(p.check(ip(1), "root", "admin"));
        assert!(p.check(ip(1), "root", "admin"));
        // Unlisted pairs stay refused, whatever came before.
        assert!(!p.check(ip(1), "root", "hunter2"));
        // Another address starts from zero.
        assert!(!p.check(ip(2), "root", "admin"));
    }

    #[test]
    fn wildcards_and_negation() {
        let p = policy(0, &["root:!root", "*:1234", "admin:*"], 10);
        assert!(p.check(ip(1), "root", "toor"));
        assert!(!p.check(ip(1), "root", "root"));
        assert!(p.check(ip(1), "guest", "1234"));
        assert!(p.check(ip(1), "admin", ""));
        assert!(!p.check(ip(1), "guest", "guest"));
        // A password may contain colons: only the first one splits.
        let p = policy(0, &["u:a:b"], 10);
        assert!(p.check(ip(1), "u", "a:b"));
    }

    #[test]
    fn nothing_is_accepted_from_an_empty_list_or_refuse_all() {
        let p = policy(0, &[], 10);
        assert!(!p.check(ip(1), "root", "root"));
        let p = CredentialPolicy::refuse_all();
        for _ in 0..10 {
            assert!(!p.check(ip(1), "root", "root"));
        }
    }

    #[test]
    fn tracking_is_bounded_and_drops_the_oldest() {
        let p = policy(1, &["root:root"], 3);
        for n in 0..50 {
            assert!(!p.check(ip(n), "x", "y"));
        }
        assert_eq!(p.tracked(), 3);
        // The three newest are remembered, so their next weak login succeeds...
        assert!(p.check(ip(49), "root", "root"));
        // ...an old one starts over.
        assert!(!p.check(ip(0), "root", "root"));
    }

    #[test]
    fn a_proof_of_the_password_decides_like_the_password() {
        let p = policy(0, &["admin:admin", "root:!root", "guest:*"], 10);
        // The "proof" here is the password itself; NTLM passes a response check instead.
        let proof_of = |pw: &'static str| move |candidate: &str| candidate == pw;
        assert!(p.check_with(ip(1), "admin", proof_of("admin")));
        assert!(!p.check_with(ip(1), "admin", proof_of("hunter2")));
        assert!(p.check_with(ip(1), "root", proof_of("toor")));
        assert!(!p.check_with(ip(1), "root", proof_of("root")));
        assert!(p.check_with(ip(1), "guest", |_| false));
        assert!(!p.check_with(ip(1), "nobody", |_| true));
        // Only the candidates of entries for this user are asked about.
        let asked = std::cell::RefCell::new(Vec::new());
        p.check_with(ip(1), "admin", |c| {
            asked.borrow_mut().push(c.to_string());
            false
        });
        assert_eq!(asked.into_inner(), vec!["admin".to_string()]);
    }

    #[test]
    fn bad_entries_are_named() {
        let e = validate_accept(&["root:x".into(), "nocolon".into()]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(validate_accept(&[":x".into()]).is_err());
    }
}
