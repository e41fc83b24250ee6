//! The canned answers of the fake shell, per [`Flavor`]: what `uname`, `id`, `cat /proc/cpuinfo`,
//! `busybox`, `wget`, … print on the system the persona claims to be.
//!
//! WHY canned: nothing is executed. The answers are the ones bots check (Mirai runs
//! `/bin/busybox TOKEN` and waits for `TOKEN: applet not found`, reads the ELF header of
//! `/bin/echo` to pick its binary, and falls back to echo-loading when `wget` and `tftp` are
//! missing, which is what lets the sensor keep the binary), kept consistent with the rest of
//! the persona (`uname` says MIPS on the router, Debian 12 on the server). Every output is a
//! fixed string or bounded by its input.

use super::{lex::Command, loader, Flavor, Recorder, Shell, Via};

/// What one simple command printed.
#[derive(Debug, Default)]
pub(super) struct Out {
    pub stdout: Vec<u8>,
    /// Error messages (always reach the terminal).
    pub stderr: Vec<u8>,
    pub exit: bool,
}

impl Out {
    fn text(s: &str) -> Out {
        Out { stdout: s.as_bytes().to_vec(), ..Out::default() }
    }
    fn bytes(b: Vec<u8>) -> Out {
        Out { stdout: b, ..Out::default() }
    }
    fn err(s: String) -> Out {
        Out { stderr: s.into_bytes(), ..Out::default() }
    }
}

const ROUTER_HOST: &str = "router";
const DEBIAN_HOST: &str = "web01";
const WINDOWS_HOST: &str = "WIN-3K9D2QF7M1A";

const BUSYBOX_BANNER: &str = "BusyBox v1.24.1 (2024-02-12 10:05:11 CST) multi-call binary.\n";
/// The applets of the router's BusyBox. `wget`, `tftp`, `ftpget` and `curl` are missing on
/// purpose: a loader that finds no downloader pastes its binary with `echo`, which is kept.
const APPLETS: &[&str] = &[
    "[", "[[", "ash", "awk", "cat", "chmod", "cp", "date", "dd", "df", "dmesg", "echo", "env", "false", "free", "grep",
    "halt", "hostname", "ifconfig", "init", "kill", "killall", "ln", "login", "ls", "mkdir", "mount", "mv", "nc",
    "netstat", "passwd", "ping", "ps", "pwd", "reboot", "rm", "route", "sed", "sh", "sleep", "tail", "telnetd", "test",
    "top", "touch", "true", "umount", "uname", "uptime", "vi",
];

/// A 32-bit little-endian MIPS ELF header (what `cat /bin/echo` starts with on the router):
/// Mirai-family loaders read `e_machine` from it to choose which binary to paste.
const MIPSEL_ELF_HEADER: &[u8] = &[
    0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ident: 32-bit, LE, SysV
    2, 0, 8, 0, 1, 0, 0, 0, // ET_EXEC, EM_MIPS, version 1
    0x60, 0x04, 0x40, 0x00, 0x34, 0, 0, 0, // entry, phoff 52
    0x94, 0x3b, 0x02, 0x00, 0x07, 0x10, 0x00, 0x70, // shoff, flags (mips32r2, pic, cpic)
    0x34, 0, 0x20, 0, 7, 0, 0x28, 0, 0x19, 0, 0x18, 0, // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
];

pub(super) fn home(flavor: Flavor, user: &str) -> String {
    match flavor {
        Flavor::BusyBox => "/".into(),
        Flavor::WindowsCmd => "/Users/Administrator".into(),
        Flavor::Debian if user == "root" => "/root".into(),
        Flavor::Debian => format!("/home/{user}"),
    }
}

pub(super) fn motd(flavor: Flavor, user: &str, via: Via) -> String {
    match flavor {
        Flavor::BusyBox => {
            "\n\nBusyBox v1.24.1 (2024-02-12 10:05:11 CST) built-in shell (ash)\nEnter 'help' for a list of built-in commands.\n\n"
                .into()
        }
        Flavor::Debian => {
            let _ = user;
            format!(
                "Linux {DEBIAN_HOST} 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) x86_64\n\n\
                 The programs included with the Debian GNU/Linux system are free software;\n\
                 the exact distribution terms for each program are described in the\n\
                 individual files in /usr/share/doc/*/copyright.\n\n\
                 Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY, to the extent\n\
                 permitted by applicable law.\n{}",
                last_login(via)
            )
        }
        Flavor::WindowsCmd => {
            "Microsoft Windows [Version 10.0.17763.5329]\n(c) 2018 Microsoft Corporation. All rights reserved.\n\n".into()
        }
    }
}

/// The "Last login" line of the previous login, a day and some hours ago, from the LAN: sshd's
/// (ctime, `PrintLastLog`) or, after login(1), pam_lastlog's (with the zone and the tty; Debian
/// 12's /etc/pam.d/login runs it after pam_motd, so it follows the motd there too).
fn last_login(via: Via) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::minutes(27 * 60 + 13);
    let d = match via {
        Via::Sshd => t.format(time::macros::format_description!(
            "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
        )),
        Via::Login => t.format(time::macros::format_description!(
            "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] UTC [year]"
        )),
    };
    let tty = match via {
        Via::Sshd => "",
        Via::Login => " on pts/0",
    };
    d.map(|d| format!("Last login: {d} from 10.0.0.5{tty}\n")).unwrap_or_default()
}

pub(super) fn prompt(flavor: Flavor, user: &str, cwd: &str) -> String {
    match flavor {
        Flavor::BusyBox => "# ".into(),
        Flavor::Debian => {
            let home = home(flavor, user);
            let shown = match cwd.strip_prefix(home.as_str()) {
                Some("") => "~".to_string(),
                Some(rest) if rest.starts_with('/') => format!("~{rest}"),
                _ => cwd.to_string(),
            };
            let sign = if user == "root" { '#' } else { '$' };
            format!("{user}@{DEBIAN_HOST}:{shown}{sign} ")
        }
        Flavor::WindowsCmd => format!("{}>", windows_path(cwd)),
    }
}

fn windows_path(cwd: &str) -> String {
    format!("C:{}", cwd.replace('/', "\\"))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn not_found(flavor: Flavor, name: &str) -> Out {
    match flavor {
        Flavor::BusyBox => Out::err(format!("-sh: {name}: not found\n")),
        Flavor::Debian => Out::err(format!("-bash: {name}: command not found\n")),
        Flavor::WindowsCmd => Out::err(format!(
            "'{name}' is not recognized as an internal or external command,\noperable program or batch file.\n"
        )),
    }
}

/// The contents of the system files attackers read, or `None`.
fn system_file(flavor: Flavor, path: &str) -> Option<Vec<u8>> {
    let text: &str = match (flavor, path) {
        (Flavor::BusyBox, "/bin/echo" | "/bin/busybox" | "/bin/sh" | "/bin/ls") => return Some(MIPSEL_ELF_HEADER.to_vec()),
        (Flavor::BusyBox, "/proc/cpuinfo") => {
            "system type\t\t: MediaTek MT7621 ver:1 eco:3\nmachine\t\t\t: Generic\nprocessor\t\t: 0\ncpu model\t\t: MIPS 1004Kc V2.15\nBogoMIPS\t\t: 584.90\n\n"
        }
        (Flavor::BusyBox, "/proc/version") => {
            "Linux version 3.10.14 (builder@buildhost) (gcc version 4.8.5) #1 SMP PREEMPT Mon Feb 12 10:11:32 CST 2024\n"
        }
        (Flavor::BusyBox, "/etc/passwd") => "root:x:0:0:root:/:/bin/sh\nadmin:x:1000:1000:admin:/:/bin/sh\n",
        (Flavor::BusyBox, "/proc/mounts") => {
            "rootfs / rootfs rw 0 0\n/dev/root / squashfs ro,relatime 0 0\nproc /proc proc rw,relatime 0 0\ntmpfs /tmp tmpfs rw,relatime 0 0\n"
        }
        (Flavor::Debian, "/proc/cpuinfo") => {
            "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 79\nmodel name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz\ncpu MHz\t\t: 2399.998\ncache size\t: 35840 KB\ncpu cores\t: 2\n\n"
        }
        (Flavor::Debian, "/proc/version") => {
            "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n"
        }
        (Flavor::Debian, "/etc/os-release") => {
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n"
        }
        (Flavor::Debian, "/etc/issue") => "Debian GNU/Linux 12 \\n \\l\n\n",
        (Flavor::Debian, "/etc/passwd") => {
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\nsshd:x:104:65534::/run/sshd:/usr/sbin/nologin\n"
        }
        (Flavor::Debian, "/proc/mounts") => "/dev/vda1 / ext4 rw,relatime 0 0\nproc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n",
        _ => return None,
    };
    Some(text.as_bytes().to_vec())
}

fn uname(flavor: Flavor, args: &[Vec<u8>]) -> Out {
    let (s, n, r, v, m) = match flavor {
        Flavor::BusyBox => ("Linux", ROUTER_HOST, "3.10.14", "#1 SMP PREEMPT Mon Feb 12 10:11:32 CST 2024", "mips"),
        _ => ("Linux", DEBIAN_HOST, "6.1.0-18-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)", "x86_64"),
    };
    let flags: String =
        args.iter().filter_map(|a| a.strip_prefix(b"-")).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    let line = if flags.contains('a') {
        format!("{s} {n} {r} {v} {m} GNU/Linux")
    } else {
        let mut parts = Vec::new();
        for (c, val) in [('s', s), ('n', n), ('r', r), ('v', v), ('m', m), ('p', m)] {
            if flags.contains(c) {
                parts.push(val);
            }
        }
        if parts.is_empty() {
            parts.push(s);
        }
        parts.join(" ")
    };
    Out::text(&format!("{line}\n"))
}

fn id(flavor: Flavor, user: &str) -> Out {
    match (flavor, user) {
        (Flavor::BusyBox, _) | (_, "root") => Out::text("uid=0(root) gid=0(root) groups=0(root)\n"),
        _ => Out::text(&format!(
            "uid=1000({user}) gid=1000({user}) groups=1000({user}),24(cdrom),25(floppy),29(audio),30(dip),44(video),46(plugdev),100(users),106(netdev)\n"
        )),
    }
}

fn ls(sh: &Shell, args: &[Vec<u8>]) -> Out {
    let dir = args.iter().find(|a| !a.starts_with(b"-")).map(|a| sh.resolve(a)).unwrap_or_else(|| sh.cwd.clone());
    let mut names: Vec<String> = match dir.as_str() {
        "/" => ["bin", "dev", "etc", "home", "lib", "mnt", "proc", "root", "sbin", "sys", "tmp", "usr", "var"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        _ => Vec::new(),
    };
    let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
    for p in sh.files.paths() {
        if let Some(name) = p.strip_prefix(prefix.as_str()) {
            if !name.contains('/') && !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
    }
    if names.is_empty() {
        return Out::default();
    }
    Out::text(&format!("{}\n", names.join("  ")))
}

fn ps(flavor: Flavor) -> Out {
    match flavor {
        Flavor::BusyBox => Out::text(
            "  PID USER       VSZ STAT COMMAND\n    1 root      1536 S    init\n  398 root      1248 S    /usr/sbin/httpd -p 80\n  412 root      1240 S    telnetd\n  977 root      1244 R    ps\n",
        ),
        _ => Out::text(
            "    PID TTY          TIME CMD\n   1841 pts/0    00:00:00 bash\n   1877 pts/0    00:00:00 ps\n",
        ),
    }
}

fn cat(sh: &Shell, args: &[Vec<u8>], stdin: Option<&[u8]>) -> Out {
    let files: Vec<&Vec<u8>> = args.iter().filter(|a| !a.starts_with(b"-") || a.as_slice() == b"-").collect();
    if files.is_empty() {
        return Out::bytes(stdin.unwrap_or_default().to_vec());
    }
    let mut out = Out::default();
    for f in files {
        if f.as_slice() == b"-" {
            out.stdout.extend_from_slice(stdin.unwrap_or_default());
            continue;
        }
        let path = sh.resolve(f);
        if let Some(v) = sh.files.get(&path) {
            out.stdout.extend_from_slice(&v.data);
        } else if let Some(t) = system_file(sh.flavor, &path) {
            out.stdout.extend_from_slice(&t);
        } else {
            let name = lossy(f);
            out.stderr.extend_from_slice(
                match sh.flavor {
                    Flavor::BusyBox => format!("cat: can't open '{name}': No such file or directory\n"),
                    _ => format!("cat: {name}: No such file or directory\n"),
                }
                .as_bytes(),
            );
        }
    }
    out
}

/// `wget`/`curl` on Debian: the host cannot be reached (nothing is ever fetched).
fn downloader_fails(name: &str, args: &[Vec<u8>]) -> Out {
    let url = args.iter().map(|a| lossy(a)).find(|a| a.contains("://") || a.contains('.')).unwrap_or_default();
    let host = url.split("://").last().unwrap_or("").split(['/', ':']).next().unwrap_or("").to_string();
    if host.is_empty() {
        return Out::err(format!("{name}: missing URL\n"));
    }
    if name == "curl" {
        Out::err(format!("curl: (7) Failed to connect to {host} port 80 after 3 ms: Couldn't connect to server\n"))
    } else {
        Out::err(format!("--2024-06-30 03:12:44--  {url}\nConnecting to {host}:80... failed: Connection refused.\n"))
    }
}

fn windows(sh: &mut Shell, name: &str, args: &[Vec<u8>]) -> Out {
    let host = WINDOWS_HOST;
    match name.to_ascii_lowercase().trim_end_matches(".exe") {
        "whoami" => Out::text(&format!("{}\\administrator\n", host.to_ascii_lowercase())),
        "hostname" => Out::text(&format!("{host}\n")),
        "ver" => Out::text("\nMicrosoft Windows [Version 10.0.17763.5329]\n"),
        "echo" => Out::text(&format!("{}\n", args.iter().map(|a| lossy(a)).collect::<Vec<_>>().join(" "))),
        "cd" | "chdir" => match args.first() {
            None => Out::text(&format!("{}\n", windows_path(&sh.cwd))),
            Some(a) => {
                let p = lossy(a).replace('\\', "/");
                let p = p.trim_start_matches("C:").trim_start_matches("c:").to_string();
                sh.cwd = super::resolve(&sh.cwd, &p);
                Out::default()
            }
        },
        "dir" => Out::text(&format!(
            " Volume in drive C has no label.\n Volume Serial Number is 8A3C-1F27\n\n Directory of {}\n\n06/30/2024  03:12 AM    <DIR>          .\n06/30/2024  03:12 AM    <DIR>          ..\n04/11/2024  09:41 AM    <DIR>          Desktop\n04/11/2024  09:41 AM    <DIR>          Documents\n               0 File(s)              0 bytes\n               4 Dir(s)  41,223,618,560 bytes free\n",
            windows_path(&sh.cwd)
        )),
        "ipconfig" => Out::text(
            "\nWindows IP Configuration\n\n\nEthernet adapter Ethernet:\n\n   Connection-specific DNS Suffix  . :\n   IPv4 Address. . . . . . . . . . . : 10.0.0.12\n   Subnet Mask . . . . . . . . . . . : 255.255.255.0\n   Default Gateway . . . . . . . . . : 10.0.0.1\n",
        ),
        "systeminfo" => Out::text(&format!(
            "\nHost Name:                 {host}\nOS Name:                   Microsoft Windows Server 2019 Standard\nOS Version:                10.0.17763 N/A Build 17763\nOS Manufacturer:           Microsoft Corporation\nSystem Type:               x64-based PC\n"
        )),
        "exit" | "logout" => Out { exit: true, ..Out::default() },
        "cls" | "rem" | "set" | "net" | "tasklist" | "type" | "powershell" | "certutil" | "bitsadmin" => Out::default(),
        _ => not_found(Flavor::WindowsCmd, name),
    }
}

/// Runs one simple command. `depth` counts nested `sh -c` / `| sh` levels.
pub(super) fn run(sh: &mut Shell, rec: &dyn Recorder, cmd: &Command, stdin: Option<&[u8]>, depth: u8) -> Out {
    let Some((first, args)) = cmd.words.split_first() else { return Out::default() };
    let name_bytes = cmd.name();
    let name = lossy(name_bytes);
    if sh.flavor == Flavor::WindowsCmd {
        return windows(sh, &name, args);
    }
    // Running a file by path (`./x`, `/tmp/x`); `/bin/…` and the like are the system's commands.
    let system_dir = [&b"/bin/"[..], b"/sbin/", b"/usr/bin/", b"/usr/sbin/"].iter().any(|d| first.starts_with(d));
    if first.contains(&b'/') && !system_dir {
        let path = sh.resolve(first);
        if sh.complete(rec, &path) || sh.files.get(&path).is_some() || system_file(sh.flavor, &path).is_some() {
            return Out::default();
        }
        let shown = lossy(first);
        return match sh.flavor {
            Flavor::BusyBox => Out::err(format!("-sh: {shown}: not found\n")),
            _ => Out::err(format!("-bash: {shown}: No such file or directory\n")),
        };
    }
    applet(sh, rec, &name, args, stdin, depth)
}

fn applet(sh: &mut Shell, rec: &dyn Recorder, name: &str, args: &[Vec<u8>], stdin: Option<&[u8]>, depth: u8) -> Out {
    let flavor = sh.flavor;
    match name {
        "busybox" => {
            let Some((applet_name, rest)) = args.split_first() else {
                return Out::text(&format!(
                    "{BUSYBOX_BANNER}BusyBox is copyrighted by many authors between 1998-2015.\nLicensed under GPLv2. See source distribution for detailed\ncopyright notices.\n\nUsage: busybox [function [arguments]...]\n"
                ));
            };
            let a = lossy(applet_name);
            if flavor == Flavor::BusyBox && !APPLETS.contains(&a.as_str()) {
                return Out::err(format!("{a}: applet not found\n"));
            }
            if flavor != Flavor::BusyBox {
                return not_found(flavor, "busybox");
            }
            applet(sh, rec, &a, rest, stdin, depth)
        }
        "echo" => Out::bytes(loader::echo(args)),
        "printf" => Out::bytes(loader::printf(args)),
        "base64" => {
            let decode =
                args.iter().any(|a| a.as_slice() == b"-d" || a.as_slice() == b"--decode" || a.as_slice() == b"-di");
            let input = match args.iter().find(|a| !a.starts_with(b"-")) {
                Some(f) => sh.files.get(&sh.resolve(f)).map(|v| v.data.clone()).unwrap_or_default(),
                None => stdin.unwrap_or_default().to_vec(),
            };
            if decode {
                Out::bytes(loader::base64_decode(&input))
            } else {
                use base64::Engine;
                Out::text(&format!("{}\n", base64::engine::general_purpose::STANDARD.encode(&input)))
            }
        }
        "cat" => cat(sh, args, stdin),
        "tee" => {
            let data = stdin.unwrap_or_default();
            let append = args.iter().any(|a| a.as_slice() == b"-a");
            for f in args.iter().filter(|a| !a.starts_with(b"-")) {
                let p = sh.resolve(f);
                if !super::is_device(&p) {
                    sh.files.write(&p, data, append);
                }
            }
            Out::bytes(data.to_vec())
        }
        "dd" => {
            let data = match args.iter().find_map(|a| a.strip_prefix(b"if=")) {
                Some(f) => sh.files.get(&sh.resolve(f)).map(|v| v.data.clone()).unwrap_or_default(),
                None => stdin.unwrap_or_default().to_vec(),
            };
            match args.iter().find_map(|a| a.strip_prefix(b"of=")) {
                Some(f) => {
                    let p = sh.resolve(f);
                    if !super::is_device(&p) {
                        sh.files.write(&p, &data, false);
                    }
                    Out::err(format!("{0}+0 records in\n{0}+0 records out\n", data.len().div_ceil(512)))
                }
                None => Out::bytes(data),
            }
        }
        "cd" => {
            let target = args.first().map(|a| lossy(a)).unwrap_or_else(|| home(flavor, &sh.user));
            let target = if target == "~" { home(flavor, &sh.user) } else { target };
            sh.cwd = super::resolve(&sh.cwd, &target);
            Out::default()
        }
        "pwd" => Out::text(&format!("{}\n", sh.cwd)),
        "chmod" => {
            for a in args.iter().skip(1) {
                let p = sh.resolve(a);
                sh.complete(rec, &p);
            }
            Out::default()
        }
        "rm" => {
            for a in args.iter().filter(|a| !a.starts_with(b"-")) {
                let p = sh.resolve(a);
                if !sh.complete(rec, &p) {
                    sh.files.forget(&p);
                }
            }
            Out::default()
        }
        "mv" | "cp" => {
            let plain: Vec<&Vec<u8>> = args.iter().filter(|a| !a.starts_with(b"-")).collect();
            if let [from, to] = plain.as_slice() {
                let (f, t) = (sh.resolve(from), sh.resolve(to));
                if name == "mv" {
                    sh.files.rename(&f, &t);
                } else {
                    sh.files.copy(&f, &t);
                }
            }
            Out::default()
        }
        "sh" | "bash" | "ash" | "." | "source" => {
            if let Some(pos) = args.iter().position(|a| a.as_slice() == b"-c") {
                let script = args.get(pos + 1).cloned().unwrap_or_default();
                let r = sh.nested(rec, &script, depth + 1);
                return Out { stdout: r.output, stderr: Vec::new(), exit: false };
            }
            match args.iter().find(|a| !a.starts_with(b"-")) {
                Some(f) => {
                    let p = sh.resolve(f);
                    let script = sh.files.get(&p).map(|v| v.data.clone());
                    sh.complete(rec, &p);
                    match script {
                        // A script the attacker wrote: follow what it would do.
                        Some(s) => {
                            let r = sh.nested(rec, &s, depth + 1);
                            Out { stdout: r.output, ..Out::default() }
                        }
                        None => Out::err(format!("{name}: can't open '{}'\n", lossy(f))),
                    }
                }
                None => match stdin {
                    // `curl … | sh`, `echo … | base64 -d | sh`.
                    Some(s) => {
                        let r = sh.nested(rec, s, depth + 1);
                        Out { stdout: r.output, ..Out::default() }
                    }
                    None => Out::default(),
                },
            }
        }
        "nohup" | "sudo" | "exec" | "command" | "env" | "time" => {
            let rest: Vec<Vec<u8>> =
                args.iter().skip_while(|a| a.starts_with(b"-") || a.contains(&b'=')).cloned().collect();
            if rest.is_empty() || depth > super::MAX_DEPTH {
                return Out::default();
            }
            let inner = Command { words: rest, ..Command::default() };
            run(sh, rec, &inner, stdin, depth + 1)
        }
        "exit" | "logout" | "quit" => Out { exit: true, ..Out::default() },
        "uname" => uname(flavor, args),
        "id" => id(flavor, &sh.user),
        "whoami" => Out::text(&format!("{}\n", if flavor == Flavor::BusyBox { "root" } else { sh.user.as_str() })),
        "hostname" => Out::text(&format!("{}\n", if flavor == Flavor::BusyBox { ROUTER_HOST } else { DEBIAN_HOST })),
        "ls" | "dir" => ls(sh, args),
        "ps" => ps(flavor),
        "nproc" => Out::text(if flavor == Flavor::BusyBox { "1\n" } else { "2\n" }),
        "uptime" => Out::text(" 03:12:44 up 41 days,  6:02,  1 user,  load average: 0.08, 0.03, 0.01\n"),
        "free" => Out::text(if flavor == Flavor::BusyBox {
            "             total       used       free     shared    buffers\nMem:        124516      61732      62784          0       4516\n"
        } else {
            "               total        used        free      shared  buff/cache   available\nMem:         4020124      611204     2630340        1064     1043312     3408920\nSwap:              0           0           0\n"
        }),
        "w" => Out::text(" 03:12:44 up 41 days,  6:02,  1 user,  load average: 0.08, 0.03, 0.01\n"),
        "wget" | "curl" | "tftp" | "ftpget" if flavor == Flavor::BusyBox => not_found(flavor, name),
        "wget" | "curl" => downloader_fails(name, args),
        "tftp" | "ftpget" => not_found(flavor, name),
        "enable" | "system" | "shell" | "linuxshell" | "true" | ":" | "export" | "unset" | "history" | "sleep"
        | "kill" | "killall" | "pkill" | "mkdir" | "touch" | "mount" | "umount" | "sync" | "ulimit" | "trap"
        | "set" | "grep" | "clear" | "[" | "test" | "iptables" | "crontab" | "passwd" | "false" => Out::default(),
        "wc" => Out::text(&format!("{}\n", stdin.map_or(0, |s| s.iter().filter(|&&b| b == b'\n').count()))),
        "ifconfig" | "ip" => Out::text(if flavor == Flavor::BusyBox {
            "br0       Link encap:Ethernet  HWaddr 00:0C:43:28:80:A1\n          inet addr:192.168.1.1  Bcast:192.168.1.255  Mask:255.255.255.0\n"
        } else {
            "2: ens3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP group default qlen 1000\n    inet 10.0.0.12/24 brd 10.0.0.255 scope global ens3\n"
        }),
        "which" => {
            let mut out = Out::default();
            for a in args {
                let n = lossy(a);
                let have = match flavor {
                    Flavor::BusyBox => APPLETS.contains(&n.as_str()),
                    _ => matches!(
                        n.as_str(),
                        "wget" | "curl" | "bash" | "sh" | "python3" | "perl" | "cat" | "ls" | "base64"
                    ),
                };
                if have {
                    out.stdout.extend_from_slice(format!("/usr/bin/{n}\n").as_bytes());
                }
            }
            out
        }
        _ => not_found(flavor, name),
    }
}
