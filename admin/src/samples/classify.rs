//! What a sample is, from its bytes alone: its file type and the YARA rules it matches.
//!
//! INTERFACE ONLY (lead, 2026-12-02): this file fixes the API the sample store calls, so the store
//! and the classifier can be built in parallel. The classify branch replaces the bodies (file
//! type from magic bytes, yara-x rules); the signatures stay.

use std::path::Path;

/// One YARA rule that matched.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleMatch {
    pub namespace: String,
    pub rule: String,
    pub tags: Vec<String>,
}

/// What [`Classifier::classify`] found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Classification {
    /// Short human type, e.g. `ELF 32-bit LSB executable, ARM`, `PE32+ executable (DLL)`,
    /// `shell script`, `zip archive`, `data`.
    pub file_type: String,
    pub matches: Vec<RuleMatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("cannot read YARA rules in {path}: {reason}")]
    Rules { path: String, reason: String },
}

/// The loaded rules (none when no rules folder is configured).
#[derive(Debug, Default)]
pub struct Classifier {
    _private: (),
}

impl Classifier {
    /// Loads every rule file in `rules_dir` (or the built-in rules only when `None`).
    pub fn load(_rules_dir: Option<&Path>) -> Result<Self, ClassifyError> {
        Ok(Self::default())
    }

    /// A stable digest of the loaded rules: samples classified under another version are
    /// rescanned by `drosera-admin samples rescan`.
    pub fn rules_version(&self) -> String {
        String::new()
    }

    pub fn classify(&self, _bytes: &[u8]) -> Classification {
        Classification { file_type: "data".into(), matches: Vec::new() }
    }
}
