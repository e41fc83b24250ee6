//! Countries for people: names, flags, and the world map (an SVG choropleth of attempts per
//! country).
//!
//! WHY shipped shapes: the dashboard loads nothing from elsewhere (air-gapped admins, a strict
//! Content-Security-Policy), so the map's country shapes are in the binary: `assets/world.tsv`,
//! Natural Earth's 1:110m Admin 0 countries (public domain, naturalearthdata.com) as
//! redistributed by the npm package world-atlas 2.0.2, projected and rounded to a 960 x 380 box by
//! `scripts/gen-world-map.py` (77 KB; the file's header and `docs/api.md` say the same). Country
//! names are Natural Earth's; countries too small for 1:110m have a name and no shape.
//!
//! WHY flags as emoji *and* text: a regional-indicator pair (🇩🇪) is a flag only where a colour
//! emoji font is installed; elsewhere (Windows, a bare Linux) it shows as two boxed letters — the
//! field report's "flags not displaying". So every flag is followed by the country code and name
//! in plain text, and the page's CSS asks for the common colour emoji fonts by name (Debian:
//! fonts-noto-color-emoji). Labels are our own (two ASCII letters checked here), never attacker
//! text, but still go through [`esc`].

use super::html::esc;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::OnceLock;

static WORLD: &str = include_str!("../../assets/world.tsv");
const MAP_W: f64 = 960.0;
const MAP_H: f64 = 380.0;
/// Fill of countries without attempts, then five steps of the legend (light to dark).
const NO_DATA: &str = "#e5e7eb";
const STEPS: [&str; 5] = ["#fde68a", "#fbbf24", "#f97316", "#dc2626", "#7f1d1d"];

struct Country {
    name: &'static str,
    /// SVG path data ("" for countries too small for the map).
    path: &'static str,
}

fn countries() -> &'static HashMap<&'static str, Country> {
    static MAP: OnceLock<HashMap<&'static str, Country>> = OnceLock::new();
    MAP.get_or_init(|| {
        WORLD
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                let cc = f.next()?;
                let name = f.next()?;
                Some((cc, Country { name, path: f.next().unwrap_or("") }))
            })
            .collect()
    })
}

/// A two-letter upper-case code, or `None` (private, reserved, unknown, anything else).
fn code(cc: &str) -> Option<&str> {
    (cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase())).then_some(cc)
}

/// The country's name (Natural Earth's), if `cc` is a known ISO 3166-1 alpha-2 code.
pub fn name(cc: &str) -> Option<&'static str> {
    countries().get(code(cc)?).map(|c| c.name)
}

/// The flag emoji of `cc` (two regional-indicator symbols), or "" for a non-country.
pub fn flag(cc: &str) -> String {
    let Some(cc) = code(cc) else { return String::new() };
    cc.bytes().filter_map(|b| char::from_u32(0x1F1E6 + u32::from(b - b'A'))).collect()
}

/// A table cell's content for a country: flag, code and name (or the label as it is).
pub fn label_html(cc: &str) -> String {
    match (code(cc), name(cc)) {
        (Some(c), n) => format!(
            r#"<span class="flag" aria-hidden="true">{}</span> <span class="cc">{}</span> <span class="cname">{}</span>"#,
            flag(c),
            esc(c),
            esc(n.unwrap_or(""))
        ),
        _ => esc(cc),
    }
}

/// Bucket 0..5 of `v` on a log scale up to `max` (0: none).
fn step(v: i64, max: i64) -> usize {
    if v <= 0 || max <= 0 {
        return 0;
    }
    let f = ((v as f64).ln_1p() / (max as f64).ln_1p()).clamp(0.0, 1.0);
    ((f * STEPS.len() as f64).ceil() as usize).clamp(1, STEPS.len())
}

/// The choropleth: every country of the shipped shapes, filled by its attempts (log scale);
/// `rows` are (country code, attempts). Countries in `rows` without a shape are listed below
/// the map so no attempt is silently missing from it.
pub fn map(title: &str, rows: &[(String, i64)]) -> String {
    let by: HashMap<&str, i64> = rows.iter().map(|(c, v)| (c.as_str(), *v)).collect();
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="map" id="world-map" role="img" aria-label="{t}" viewBox="0 0 {MAP_W} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title><rect width="{MAP_W}" height="{MAP_H}" fill="#f8fafc"/>"##,
        t = esc(title),
        h = MAP_H + 30.0
    );
    let mut all: Vec<(&&str, &Country)> = countries().iter().filter(|(_, c)| !c.path.is_empty()).collect();
    all.sort_by_key(|(cc, _)| **cc);
    for (cc, c) in all {
        let v = by.get(*cc).copied().unwrap_or(0);
        let fill = match step(v, max) {
            0 => NO_DATA,
            k => STEPS[k - 1],
        };
        let _ = write!(
            s,
            r##"<path d="{}" fill="{fill}" stroke="#ffffff" stroke-width="0.5" data-cc="{cc}" data-attempts="{v}"><title>{} {}: {v}</title></path>"##,
            c.path,
            esc(c.name),
            flag(cc),
            cc = esc(cc)
        );
    }
    // Legend: the five steps with their lower bounds.
    for (i, color) in STEPS.iter().enumerate() {
        let lo =
            if max > 0 { ((max as f64).ln_1p() * i as f64 / STEPS.len() as f64).exp_m1().ceil() as i64 } else { 0 };
        let x = 10.0 + 90.0 * i as f64;
        let _ = write!(
            s,
            r##"<rect x="{x}" y="{y}" width="14" height="14" fill="{color}"/><text x="{tx}" y="{ty}" font-size="12" fill="#374151">≥ {}</text>"##,
            lo.max(1),
            y = MAP_H + 8.0,
            tx = x + 18.0,
            ty = MAP_H + 20.0
        );
    }
    s.push_str("</svg>");
    let off: Vec<String> = rows
        .iter()
        .filter(|(cc, v)| *v > 0 && countries().get(cc.as_str()).is_none_or(|c| c.path.is_empty()))
        .map(|(cc, v)| format!("{} {v}", label_html(cc)))
        .collect();
    if !off.is_empty() {
        let _ = write!(
            s,
            r#"<p class="note" id="map-off">Not on the map (too small, or no country): {}</p>"#,
            off.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flags_and_the_map() {
        assert_eq!(name("DE"), Some("Germany"));
        assert_eq!(name("SG"), Some("Singapore"), "a name without a shape");
        assert_eq!(name("private"), None);
        assert_eq!(flag("DE"), "\u{1F1E9}\u{1F1EA}");
        assert_eq!(flag("de"), "");
        assert_eq!(flag("private"), "");
        assert!(label_html("US").contains("United States"));
        assert_eq!(label_html("<b>"), "&lt;b&gt;");
        assert!(countries().values().filter(|c| !c.path.is_empty()).count() > 150);
        let m = map("t<", &[("DE".into(), 100), ("US".into(), 1), ("SG".into(), 5), ("private".into(), 3)]);
        assert!(m.starts_with("<svg") && m.contains("t&lt;"));
        assert!(m.contains(r#"data-cc="DE" data-attempts="100""#));
        assert!(m.contains(&format!(r##"fill="{}" stroke="#ffffff" stroke-width="0.5" data-cc="DE""##, STEPS[4])));
        assert!(m.contains(&format!(r##"fill="{NO_DATA}" stroke="#ffffff" stroke-width="0.5" data-cc="FR""##)));
        // Singapore and private addresses are listed, not lost.
        assert!(m.contains("map-off") && m.contains("Singapore") && m.contains("private 3"));
        assert_eq!((step(0, 10), step(1, 1000), step(1000, 1000)), (0, 1, 5));
    }
}
