//! `[drill]`: the caps of the drill-down (attacker page, session page, search).
//!
//! WHY config: each drill-down reads raw events, and a busy address or a long session has
//! millions. Every read is bounded by one of these caps; the project rule is that every cap is
//! the operator's to set, with defaults that keep each page well under a second at ten million
//! events (`docs/benchmarks.md`). The same values reach the dashboard, the JSON API and the CLI
//! (`drosera-admin attacker|session|search`), and every answer says when one of them cut it.

use serde::{Deserialize, Serialize};

/// `[drill]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillConfig {
    /// Newest events of one address an attacker page reads.
    pub attacker_events: u32,
    /// Events of one connection a session page shows (the first ones).
    pub session_events: u32,
    /// Newest rows of one kind a search reads.
    pub search_scan: u32,
    /// Results a search returns.
    pub search_hits: u32,
    /// Sessions per attacker page.
    pub sessions_per_page: u32,
    /// Rows per list of an attacker page (credentials, commands, downloads, ...), most
    /// frequent first.
    pub list_rows: u32,
    /// Longest search text accepted, in characters (longer is refused before any database
    /// work).
    pub search_chars: u32,
}

impl Default for DrillConfig {
    fn default() -> Self {
        DrillConfig::DEFAULTS
    }
}

impl DrillConfig {
    /// The defaults (what `admin/drosera-admin.example.toml` says), as a constant.
    pub const DEFAULTS: DrillConfig = DrillConfig {
        attacker_events: 20_000,
        session_events: 5_000,
        search_scan: 20_000,
        search_hits: 200,
        sessions_per_page: 50,
        list_rows: 500,
        search_chars: 512,
    };

    /// (key, problem, fix) of the first bad value. The upper limits keep one request's memory
    /// and page size sane (a page holds what it read).
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let d = DrillConfig::default();
        for (key, v, max, default, why) in [
            ("attacker_events", self.attacker_events, 1_000_000, d.attacker_events, "one page tallies them in memory"),
            ("session_events", self.session_events, 100_000, d.session_events, "one page shows every one"),
            ("search_scan", self.search_scan, 1_000_000, d.search_scan, "one search reads them per kind"),
            ("search_hits", self.search_hits, 10_000, d.search_hits, "one page shows every one"),
            ("sessions_per_page", self.sessions_per_page, 1_000, d.sessions_per_page, "one page shows every one"),
            ("list_rows", self.list_rows, 10_000, d.list_rows, "one page shows every one, per list"),
            (
                "search_chars",
                self.search_chars,
                10_000,
                d.search_chars,
                "one search compares it with every row it reads",
            ),
        ] {
            if v == 0 || v > max {
                return Err((
                    format!("drill.{key}"),
                    format!("is {v}; it must be between 1 and {max} ({why})"),
                    format!("use the default, {default}"),
                ));
            }
        }
        Ok(())
    }

    /// The last attacker page that can hold a session: sessions come from at most
    /// `attacker_events` events, `sessions_per_page` per page. Page numbers are clamped to it.
    pub fn last_attacker_page(&self) -> usize {
        (self.attacker_events as usize).div_ceil((self.sessions_per_page as usize).max(1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert_eq!(DrillConfig::default().validate(), Ok(()));
        let bad = DrillConfig { search_hits: 0, ..Default::default() };
        let (key, problem, fix) = bad.validate().unwrap_err();
        assert_eq!(key, "drill.search_hits");
        assert!(problem.contains("between 1 and 10000"), "{problem}");
        assert_eq!(fix, "use the default, 200");
        let bad = DrillConfig { attacker_events: 2_000_000, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().0, "drill.attacker_events");
        let bad = DrillConfig { search_chars: 10_001, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().0, "drill.search_chars");
    }

    #[test]
    fn the_last_attacker_page_is_where_the_read_events_end() {
        assert_eq!(DrillConfig::default().last_attacker_page(), 400);
        let c = DrillConfig { attacker_events: 101, sessions_per_page: 50, ..Default::default() };
        assert_eq!(c.last_attacker_page(), 3);
    }
}
