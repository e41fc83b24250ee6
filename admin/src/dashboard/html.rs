//! HTML escaping, shared by the pages and the SVG charts (both render attacker-influenced text).

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push('\u{fffd}'),
            // Bidi overrides and invisible characters: shown as their escape, so a name or URL
            // cannot pass for another (see `crate::shown`).
            c if crate::shown::is_format(c) => o.extend(c.escape_default()),
            c => o.push(c),
        }
    }
    o
}
