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

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn markup_controls_and_format_characters_are_defused() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(esc("a\x1bb"), "a\u{fffd}b");
        // A right-to-left override or a zero-width space cannot make one name look like another.
        assert_eq!(esc("admin\u{202e}fdp.exe"), "admin\\u{202e}fdp.exe");
        assert_eq!(esc("ro\u{200b}ot"), "ro\\u{200b}ot");
    }
}
