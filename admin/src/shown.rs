//! Characters attacker text must not carry raw to a terminal, a spreadsheet or a page.
//!
//! WHY one module: the report (terminal), the CSV and JSONL exports (`cat`, spreadsheets) and
//! the dashboard (browser) all show strings an attacker chose. Control characters (C0, DEL,
//! C1: `ESC ]0;...`, `CSI`) would run in a terminal; format characters (Unicode category Cf:
//! right-to-left override U+202E, zero-width space U+200B, bidi isolates, ...) make a user name
//! or URL look like another. Every place that shows such text escapes both the same way, so a
//! review has one list to check (issue 19).

/// True for a character of Unicode category Cf (format), the bidi and invisible ones included.
pub fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD
        | 0x0600..=0x0605
        | 0x061C
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F)
}

/// True for a character that must not be shown raw: a control character (C0, DEL, C1) or a
/// format character.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// `s` with every unsafe character written as a visible escape (`\n`, `\u{1b}`, `\u{202e}`).
pub fn escaped(s: &str) -> String {
    if !s.chars().any(is_unsafe) {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            o.extend(c.escape_default());
        } else {
            o.push(c);
        }
    }
    o
}

/// A serialized JSON line with C1 controls and format characters written as JSON escapes
/// (`\u0085`, `\u202e`). serde_json escapes C0 itself; these it leaves raw. Outside strings a
/// JSON text holds no such characters, so replacing them anywhere is safe.
pub fn json_line(json: &str) -> String {
    if !json.chars().any(|c| is_unsafe(c) && !c.is_ascii()) {
        return json.to_string();
    }
    let mut o = String::with_capacity(json.len() + 12);
    for c in json.chars() {
        if is_unsafe(c) && !c.is_ascii() {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                o.push_str(&format!("\\u{:04x}", unit));
            }
        } else {
            o.push(c);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_format_characters_become_visible() {
        assert_eq!(escaped("plain ünïcode"), "plain ünïcode");
        assert_eq!(escaped("a\x1b]0;pwned\x07b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(escaped("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escaped("admin\u{202e}gpj.exe"), "admin\\u{202e}gpj.exe");
        assert_eq!(escaped("a\u{200b}b\nc"), "a\\u{200b}b\\nc");
        assert!(is_format('\u{2066}') && is_format('\u{feff}') && !is_format('a') && !is_format('é'));
    }

    #[test]
    fn json_lines_escape_c1_and_format_characters() {
        let line =
            serde_json::to_string(&serde_json::json!({"u": "x\u{85}y\u{202e}z\u{1b}", "e": "\u{1F600}"})).unwrap();
        let safe = json_line(&line);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["u"], "x\u{85}y\u{202e}z\u{1b}");
        assert_eq!(back["e"], "\u{1F600}");
    }
}
