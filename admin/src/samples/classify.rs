//! What a sample is, from its bytes alone: its file type and the YARA rules it matches.
//!
//! The file type comes from [`super::filetype`] (a pure magic-bytes detector). The rules are
//! compiled once at load with `yara-x` (VirusTotal's Rust YARA, cargo feature `yara`, on by
//! default): the rules shipped in `admin/rules/` (built into the binary, namespace `builtin`)
//! plus every `*.yar` in the configured `[classify] rules_dir` (one namespace per file, named
//! after it, so two files may reuse a rule name). A broken rule file stops the load with an
//! error naming the file and the line, rather than silently classifying with fewer rules.
//!
//! [`Classifier::rules_version`] is a digest of every rule text (with its name), so the store
//! knows which samples were classified under older rules and `samples rescan` can redo them. A
//! scan that hits `scan_timeout_s` is not silent: it adds the pseudo-match
//! `drosera/scan_incomplete` so the sample shows it was not fully scanned.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The rules shipped in the repository (`admin/rules/`), compiled into the binary.
pub const BUILTIN_RULES: &[(&str, &str)] = &[
    ("eicar.yar", include_str!("../../rules/eicar.yar")),
    ("mirai.yar", include_str!("../../rules/mirai.yar")),
    ("gafgyt.yar", include_str!("../../rules/gafgyt.yar")),
    ("wannacry.yar", include_str!("../../rules/wannacry.yar")),
    ("coinminer.yar", include_str!("../../rules/coinminer.yar")),
    ("loaders.yar", include_str!("../../rules/loaders.yar")),
];

/// `[classify]` in the admin config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// Folder of extra `*.yar` rule files (not recursive); none = the built-in rules only.
    pub rules_dir: Option<PathBuf>,
    /// Most rule files read from `rules_dir`; more is a load error (not a silent cut).
    pub max_rule_files: usize,
    /// Largest rule file read, bytes; a larger one is a load error.
    pub max_rule_file_bytes: u64,
    /// Seconds one sample's YARA scan may take before it is stopped and marked incomplete.
    pub scan_timeout_s: u64,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig { rules_dir: None, max_rule_files: 1024, max_rule_file_bytes: 4 << 20, scan_timeout_s: 10 }
    }
}

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

fn rules_error(path: &Path, reason: impl Into<String>) -> ClassifyError {
    ClassifyError::Rules { path: path.display().to_string(), reason: reason.into() }
}

/// The loaded rules (none when no rules folder is configured).
#[derive(Default)]
pub struct Classifier {
    #[cfg(feature = "yara")]
    rules: Option<yara_x::Rules>,
    version: String,
    scan_timeout: std::time::Duration,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("version", &self.version).finish_non_exhaustive()
    }
}

/// Every `*.yar` file of `dir`, sorted by name, bounded by the config's caps.
fn read_rule_dir(dir: &Path, cfg: &ClassifyConfig) -> Result<Vec<(String, String)>, ClassifyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| rules_error(dir, e.to_string()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| rules_error(dir, e.to_string()))?.path();
        if path.extension().is_some_and(|x| x == "yar") && path.is_file() {
            if paths.len() == cfg.max_rule_files {
                return Err(rules_error(
                    dir,
                    format!("more than {} rule files; raise [classify] max_rule_files", cfg.max_rule_files),
                ));
            }
            paths.push(path);
        }
    }
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let len = std::fs::metadata(&path).map_err(|e| rules_error(&path, e.to_string()))?.len();
        if len > cfg.max_rule_file_bytes {
            return Err(rules_error(
                &path,
                format!("{len} bytes is over [classify] max_rule_file_bytes ({})", cfg.max_rule_file_bytes),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| rules_error(&path, e.to_string()))?;
        out.push((path.display().to_string(), text));
    }
    Ok(out)
}

/// The built-in rules (namespace `builtin`) and each folder file (its own namespace), compiled.
#[cfg(feature = "yara")]
fn compile(local: &[(String, String)]) -> Result<yara_x::Rules, ClassifyError> {
    let mut compiler = yara_x::Compiler::new();
    compiler.new_namespace("builtin");
    for (name, text) in BUILTIN_RULES {
        let src = yara_x::SourceCode::from(*text).with_origin(name);
        compiler.add_source(src).map_err(|e| rules_error(Path::new(name), e.to_string()))?;
    }
    for (path, text) in local {
        compiler.new_namespace(&namespace_of(path));
        let src = yara_x::SourceCode::from(text.as_str()).with_origin(path);
        compiler.add_source(src).map_err(|e| rules_error(Path::new(path), e.to_string()))?;
    }
    let rules = compiler.build();
    tracing::info!(rules = rules.iter().len(), files = local.len(), "YARA rules loaded");
    Ok(rules)
}

/// A namespace from a rule file name: its stem, reduced to identifier characters.
#[cfg_attr(not(feature = "yara"), allow(dead_code))]
fn namespace_of(path: &str) -> String {
    let stem = Path::new(path).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ns: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if ns.is_empty() || ns == "builtin" || ns.starts_with(|c: char| c.is_ascii_digit()) {
        format!("local_{ns}")
    } else {
        ns
    }
}

impl Classifier {
    /// Loads every rule file in `rules_dir` (or the built-in rules only when `None`).
    pub fn load(rules_dir: Option<&Path>) -> Result<Self, ClassifyError> {
        let cfg = ClassifyConfig { rules_dir: rules_dir.map(Path::to_path_buf), ..ClassifyConfig::default() };
        Self::from_config(&cfg)
    }

    /// [`Classifier::load`] with the `[classify]` section's caps.
    pub fn from_config(cfg: &ClassifyConfig) -> Result<Self, ClassifyError> {
        let local = match &cfg.rules_dir {
            Some(dir) => read_rule_dir(dir, cfg)?,
            None => Vec::new(),
        };
        let mut digest = Sha256::new();
        // File names, not full paths: moving the rules folder is not a rules change.
        let file_name =
            |p: &str| Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let local_named = local.iter().map(|(p, t)| (file_name(p), t.as_str()));
        for (name, text) in BUILTIN_RULES.iter().map(|(n, t)| (n.to_string(), *t)).chain(local_named) {
            for part in [name.as_bytes(), text.as_bytes()] {
                digest.update((part.len() as u64).to_le_bytes());
                digest.update(part);
            }
        }
        let hex = hex::encode(digest.finalize());
        let version = if cfg!(feature = "yara") { hex } else { format!("no-yara-{hex}") };
        let scan_timeout = std::time::Duration::from_secs(cfg.scan_timeout_s.max(1));
        #[cfg(feature = "yara")]
        let rules = Some(compile(&local)?);
        #[cfg(not(feature = "yara"))]
        tracing::warn!(
            files = local.len(),
            "built without the `yara` feature: samples get a file type, no YARA matches"
        );
        Ok(Classifier {
            #[cfg(feature = "yara")]
            rules,
            version,
            scan_timeout,
        })
    }

    /// A stable digest of the loaded rules: samples classified under another version are
    /// rescanned by `drosera-admin samples rescan`.
    pub fn rules_version(&self) -> String {
        self.version.clone()
    }

    pub fn classify(&self, bytes: &[u8]) -> Classification {
        let file_type = super::filetype::detect(bytes).description;
        Classification { file_type, matches: self.matches(bytes) }
    }

    #[cfg(feature = "yara")]
    fn matches(&self, bytes: &[u8]) -> Vec<RuleMatch> {
        let Some(rules) = &self.rules else { return Vec::new() };
        let mut scanner = yara_x::Scanner::new(rules);
        scanner.set_timeout(self.scan_timeout);
        match scanner.scan(bytes) {
            Ok(results) => results
                .matching_rules()
                .map(|r| RuleMatch {
                    namespace: r.namespace().to_string(),
                    rule: r.identifier().to_string(),
                    tags: r.tags().map(|t| t.identifier().to_string()).collect(),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, len = bytes.len(), "YARA scan incomplete");
                vec![RuleMatch {
                    namespace: "drosera".into(),
                    rule: "scan_incomplete".into(),
                    tags: vec![e.to_string().chars().take(64).collect()],
                }]
            }
        }
    }

    #[cfg(not(feature = "yara"))]
    fn matches(&self, _bytes: &[u8]) -> Vec<RuleMatch> {
        let _ = self.scan_timeout;
        Vec::new()
    }
}
