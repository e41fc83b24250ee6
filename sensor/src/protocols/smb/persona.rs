//! What the SMB service says about the machine, per sensor persona.
//!
//! WHY one table: `nmap -sV` (the SMB1 negotiate's fields), `smb-os-discovery` (the session
//! setup's native OS and LAN manager strings, the NTLM challenge's names) and
//! `smb-vuln-ms17-010` (the PeekNamedPipe answer) must all tell the same story, and that story
//! must agree with the other services of the persona. Two machines are modelled:
//! * an unpatched Windows Server 2008 R2 SP1 in a workgroup (`windows-server`, and `mixed`,
//!   whose SMB was always a Windows file server): SMB1 and SMB 2.1, vulnerable to MS17-010 on
//!   purpose, so worms show their hand and DoublePulsar uploads arrive;
//! * Samba 4 on Debian (`linux-server`): SMB1 enabled (`server min protocol = NT1`), not
//!   vulnerable, no implant; and the Samba 3.6 of router firmware (`iot-router`).
//!
//! All offer SMB 2.1 at most: 3.x sessions must sign the final session setup response, which
//! needs the session key, and 2.1 is exactly what Windows Server 2008 R2 speaks.

use super::ntlm::{ntlm_version, NtlmTarget};
use crate::config::Persona;
use std::sync::OnceLock;

/// 100-ns FILETIME units in a day.
const DAY: u64 = 864_000_000_000;

/// What stays the same on every connection to one machine: its server GUID and the time it
/// booted. A real server keeps both until it reboots, so they are fixed for the sensor
/// process (a restart looks like a reboot); a GUID that changed per connection, or a
/// Windows server without a boot time (`nmap --script smb2-time` prints `start_date: N/A`),
/// would give the honeypot away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIdentity {
    pub guid: [u8; 16],
    /// FILETIME of the last boot: 9 to 40 days before the sensor started.
    pub boot_time: u64,
}

/// The sensor process's [`ServerIdentity`] (chosen on first use).
pub fn server_identity() -> ServerIdentity {
    static ID: OnceLock<ServerIdentity> = OnceLock::new();
    *ID.get_or_init(|| ServerIdentity {
        guid: rand::random(),
        boot_time: super::filetime_now().saturating_sub(9 * DAY + rand::random::<u64>() % (31 * DAY)),
    })
}

/// The SMB face of one persona.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmbPersona {
    /// NetBIOS name when the config's `banner` is empty.
    pub default_host: &'static str,
    /// Workgroup named in the SMB1 negotiate (and by Samba in NTLM).
    pub workgroup: &'static str,
    /// SMB1 session setup `NativeOS` / `NativeLanMan`.
    pub native_os: &'static str,
    pub native_lanman: &'static str,
    /// NTLM VERSION field.
    pub ntlm_version: [u8; 8],
    /// Samba picks "NT LANMAN 1.0" when offered; Windows "NT LM 0.12".
    pub samba: bool,
    /// Answers the MS17-010 PeekNamedPipe probe with STATUS_INSUFF_SERVER_RESOURCES and the
    /// DoublePulsar ping like an implanted host.
    pub vulnerable: bool,
    /// Disk shares a logged-in user may connect to (besides `IPC$`), upper case.
    pub disk_shares: &'static [&'static str],
    /// SMB1 server capabilities in the negotiate response (without extended security).
    pub capabilities: u32,
    /// Best SMB2 dialect offered (2.1 or 2.0.2).
    pub smb2_max: u16,
    /// SMB2 NEGOTIATE's ServerStartTime carries the boot time (Windows); Samba sends 0.
    pub reports_boot_time: bool,
}

/// Windows Server 2008 R2 SP1 (6.1.7601), standalone.
pub const WINDOWS_2008_R2: SmbPersona = SmbPersona {
    default_host: "FILESRV01",
    workgroup: "WORKGROUP",
    native_os: "Windows Server 2008 R2 Standard 7601 Service Pack 1",
    native_lanman: "Windows Server 2008 R2 Standard 6.1",
    ntlm_version: ntlm_version(6, 1, 7601),
    samba: false,
    vulnerable: true,
    disk_shares: &["C$", "ADMIN$", "SHARE", "USERS"],
    capabilities: 0x0001_e3fd,
    smb2_max: 0x0210,
    reports_boot_time: true,
};

/// Samba 4.17 as Debian 12 ships it, with SMB1 enabled.
pub const SAMBA_DEBIAN: SmbPersona = SmbPersona {
    default_host: "FILESRV01",
    workgroup: "WORKGROUP",
    native_os: "Windows 6.1",
    native_lanman: "Samba 4.17.12-Debian",
    ntlm_version: ntlm_version(6, 1, 0),
    samba: true,
    vulnerable: false,
    disk_shares: &["SHARE", "PUBLIC", "HOMES"],
    capabilities: 0x0000_f3fd,
    smb2_max: 0x0210,
    reports_boot_time: false,
};

/// A router's Samba for its USB disk: the 3.6 series router firmware still ships (SMB 2.0.2 at
/// most, and the "Unix" native OS Samba 3 reports).
pub const SAMBA_ROUTER: SmbPersona = SmbPersona {
    default_host: "ROUTER",
    native_os: "Unix",
    native_lanman: "Samba 3.6.25",
    disk_shares: &["USB", "SHARE"],
    smb2_max: 0x0202,
    ..SAMBA_DEBIAN
};

impl SmbPersona {
    pub fn of(p: Persona) -> &'static SmbPersona {
        match p {
            Persona::Mixed | Persona::WindowsServer => &WINDOWS_2008_R2,
            Persona::LinuxServer => &SAMBA_DEBIAN,
            Persona::IotRouter => &SAMBA_ROUTER,
        }
    }

    /// The names of `host` in the NTLM challenge: a standalone Windows server uses its own name
    /// as NetBIOS and DNS domain; Samba names its workgroup and leaves the DNS domain empty.
    pub fn ntlm_target<'a>(&self, host: &'a str, dns_host: &'a str) -> NtlmTarget<'a> {
        if self.samba {
            NtlmTarget {
                nb_domain: self.workgroup,
                nb_host: host,
                dns_domain: "",
                dns_host,
                version: self.ntlm_version,
            }
        } else {
            NtlmTarget { nb_domain: host, nb_host: host, dns_domain: dns_host, dns_host, version: self.ntlm_version }
        }
    }

    /// Whether `share` (as the client names it, any case) is a disk share of this machine.
    pub fn is_disk_share(&self, share: &str) -> bool {
        self.disk_shares.iter().any(|s| s.eq_ignore_ascii_case(share))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_persona_has_one_smb_face() {
        assert!(SmbPersona::of(Persona::WindowsServer).vulnerable);
        assert_eq!(SmbPersona::of(Persona::Mixed), SmbPersona::of(Persona::WindowsServer));
        for p in [Persona::LinuxServer, Persona::IotRouter] {
            let s = SmbPersona::of(p);
            assert!(s.samba && !s.vulnerable);
            assert!(s.native_lanman.starts_with("Samba "));
            assert!(!s.is_disk_share("C$"));
        }
        assert!(WINDOWS_2008_R2.is_disk_share("admin$"));
        let t = WINDOWS_2008_R2.ntlm_target("FILESRV01", "filesrv01");
        assert_eq!((t.nb_domain, t.dns_domain), ("FILESRV01", "filesrv01"));
        let t = SAMBA_DEBIAN.ntlm_target("FILESRV01", "filesrv01");
        assert_eq!((t.nb_domain, t.dns_domain), ("WORKGROUP", ""));
    }

    #[test]
    fn the_machine_keeps_its_guid_and_boot_time() {
        let a = server_identity();
        assert_eq!(a, server_identity());
        let uptime = super::super::filetime_now() - a.boot_time;
        assert!((9 * DAY..40 * DAY + DAY).contains(&uptime), "uptime {} days", uptime / DAY);
        const { assert!(WINDOWS_2008_R2.reports_boot_time && !SAMBA_DEBIAN.reports_boot_time) };
    }
}
