//! MongoDB (27017): an unauthenticated-looking mongod, so database ransom bots and credential
//! stuffers show what they run.
//!
//! Open MongoDB servers are found by `hello`/`isMaster`/`buildInfo`, emptied with
//! `listDatabases` and `find`, and ransomed (`dropDatabase`, then an insert of the ransom note);
//! others try SCRAM logins. We speak the wire protocol's `OP_MSG` (what every driver since
//! MongoDB 3.6 uses) and the legacy `OP_QUERY` on `db.$cmd` (old tools, `nmap -sV`'s
//! `serverStatus` probe), answer `hello`/`isMaster`, `buildInfo`, `serverStatus`, `ping`,
//! `listDatabases`, `whatsmyuri`, `getLog`, `endSessions` like a MongoDB 6.0 server, record
//! every command name as a `Command` (`name db=DB [collection]`), and fail everything else
//! with a believable error. SCRAM-SHA-1/SHA-256 logins (`saslStart`, also when sent inside
//! `hello`'s `speculativeAuthenticate`, and the user named by `saslSupportedMechs`) record the
//! user name as a `Login` (mechanism, database); the exchange continues with a server-first
//! message and fails at `saslContinue` with "Authentication failed." (code 18) as for a wrong
//! password.
//!
//! Parsing is pure ([`wire`], [`bson`]) and capped by the `[mongodb]` config section
//! ([`MongodbSection`]): a message is at most `max_message_bytes` (a larger length ends the
//! session before anything is allocated), a session handles at most `max_messages` messages;
//! BSON nesting and element counts have fixed ceilings in [`bson`] (recursion guards).

pub mod bson;
pub mod wire;

use crate::config::{MongodbSection, ServiceSection};
use crate::session::{Session, SessionResult};
use bson::{Doc, Value, Writer};
use drosera_uplink::event::{CloseReason, Detail, Secret};
use wire::{Command, OP_MSG, OP_QUERY};

/// The server version told to clients.
pub const VERSION: &str = "6.0.12";

/// What to do with one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The reply document.
    pub reply: Vec<u8>,
    /// A SCRAM login to record: (user, mechanism).
    pub login: Option<(String, String)>,
}

/// The user name in a SCRAM client-first message (`n,,n=user,r=nonce`), with `=2C`/`=3D`
/// decoded.
pub fn scram_user(payload: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(payload);
    let at = text.find("n=")?;
    let rest = &text[at + 2..];
    let user = rest.split(',').next()?;
    Some(user.replace("=2C", ",").replace("=3D", "="))
}

fn client_nonce(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    text.split(',').find_map(|p| p.strip_prefix("r=")).unwrap_or("").chars().take(128).collect()
}

fn err(code: i32, name: &str, msg: &str) -> Vec<u8> {
    Writer::new().double("ok", 0.0).str("errmsg", msg).i32("code", code).str("codeName", name).finish()
}

fn hello(cmd: &Doc, legacy: bool, connection_id: i32) -> Writer {
    let mut w = Writer::new();
    if legacy {
        w = w.bool("ismaster", true);
    } else {
        w = w.bool("isWritablePrimary", true);
    }
    w = w
        .doc(
            "topologyVersion",
            Writer::new().object_id("processId", [0x65, 0x4a, 0x1b, 0x2c, 0, 0, 0, 0, 0, 0, 0, 1]).i64("counter", 0),
        )
        .i32("maxBsonObjectSize", 16 * 1024 * 1024)
        .i32("maxMessageSizeBytes", 48_000_000)
        .i32("maxWriteBatchSize", 100_000)
        .datetime("localTime", drosera_uplink::event::now_ms())
        .i32("logicalSessionTimeoutMinutes", 30)
        .i32("connectionId", connection_id)
        .i32("minWireVersion", 0)
        .i32("maxWireVersion", 17)
        .bool("readOnly", false);
    if cmd.get("helloOk").is_some() {
        w = w.bool("helloOk", true);
    }
    if let Some(Value::String(user)) = cmd.get("saslSupportedMechs") {
        let _ = user;
        w = w.array("saslSupportedMechs", Writer::new().str("0", "SCRAM-SHA-1").str("1", "SCRAM-SHA-256"));
    }
    w
}

fn build_info() -> Writer {
    Writer::new()
        .str("version", VERSION)
        .str("gitVersion", "21e6e8e11a45dfbdb7ca6cf95fa8c5f859e2b118")
        .array("modules", Writer::new())
        .str("allocator", "tcmalloc")
        .str("javascriptEngine", "mozjs")
        .str("sysInfo", "deprecated")
        .array("versionArray", Writer::new().i32("0", 6).i32("1", 0).i32("2", 12).i32("3", 0))
        .doc(
            "openssl",
            Writer::new().str("running", "OpenSSL 3.0.2 15 Mar 2022").str("compiled", "OpenSSL 3.0.2 15 Mar 2022"),
        )
        .doc(
            "buildEnvironment",
            Writer::new().str("distmod", "ubuntu2204").str("distarch", "x86_64").str("target_arch", "x86_64"),
        )
        .i32("bits", 64)
        .bool("debug", false)
        .i32("maxBsonObjectSize", 16 * 1024 * 1024)
        .array("storageEngines", Writer::new().str("0", "devnull").str("1", "ephemeralForTest").str("2", "wiredTiger"))
}

fn databases() -> Writer {
    let db = |name: &str, size: i64| Writer::new().str("name", name).i64("sizeOnDisk", size).bool("empty", false);
    Writer::new()
        .array(
            "databases",
            Writer::new().doc("0", db("admin", 40960)).doc("1", db("config", 110_592)).doc("2", db("local", 73_728)),
        )
        .i64("totalSize", 225_280)
        .i64("totalSizeMb", 0)
}

/// The reply to one command document (OP_MSG body or OP_QUERY query on `$cmd`).
pub fn answer(cmd: &Doc, connection_id: i32, server_nonce: &str) -> Outcome {
    let name = cmd.first_key().unwrap_or("");
    let lower = name.to_ascii_lowercase();
    let ok = |w: Writer| w.double("ok", 1.0).finish();
    let mut login = None;
    let reply = match lower.as_str() {
        "hello" | "ismaster" => {
            let mut w = hello(cmd, lower == "ismaster", connection_id);
            if let Some(spec) = cmd.get_doc("speculativeAuthenticate") {
                if let Some(Value::Binary(_, p)) = spec.get("payload") {
                    let mech = spec.get_str("mechanism").unwrap_or("").to_string();
                    login = scram_user(p).map(|u| (u, mech));
                }
            }
            if let Some(Value::String(user)) = cmd.get("saslSupportedMechs") {
                if login.is_none() {
                    let u = user.split_once('.').map_or(user.as_str(), |(_, u)| u);
                    login = Some((u.to_string(), "saslSupportedMechs".into()));
                }
                let _ = &mut w;
            }
            ok(w)
        }
        "buildinfo" => ok(build_info()),
        "ping" | "endsessions" | "logout" => ok(Writer::new()),
        "serverstatus" => ok(Writer::new()
            .str("host", "mongo-prod-01")
            .str("version", VERSION)
            .str("process", "mongod")
            .i64("pid", 1187)
            .double("uptime", 1_726_371.0)
            .datetime("localTime", drosera_uplink::event::now_ms())),
        "listdatabases" => ok(databases()),
        "whatsmyuri" => ok(Writer::new().str("you", "127.0.0.1:0")),
        "getlog" => ok(Writer::new().i32("totalLinesWritten", 0).array("log", Writer::new())),
        "getparameter" => ok(Writer::new().str("featureCompatibilityVersion", "6.0")),
        "hostinfo" => {
            ok(Writer::new().doc("system", Writer::new().str("hostname", "mongo-prod-01").i32("numCores", 4)))
        }
        "getcmdlineopts" => ok(Writer::new().array(
            "argv",
            Writer::new().str("0", "/usr/bin/mongod").str("1", "--config").str("2", "/etc/mongod.conf"),
        )),
        "saslstart" => {
            let mech = cmd.get_str("mechanism").unwrap_or("").to_string();
            let payload = match cmd.get("payload") {
                Some(Value::Binary(_, p)) => p.clone(),
                Some(Value::String(s)) => s.as_bytes().to_vec(),
                _ => Vec::new(),
            };
            login = Some((scram_user(&payload).unwrap_or_default(), mech.clone()));
            if mech.starts_with("SCRAM-SHA-") {
                let iterations = if mech == "SCRAM-SHA-256" { 15_000 } else { 10_000 };
                let first = format!(
                    "r={}{},s={},i={}",
                    client_nonce(&payload),
                    server_nonce,
                    "yQqBvlPDzr5FMtf4ONu7NwMTrnLFdyVoEqkWrg==",
                    iterations
                );
                ok(Writer::new().i32("conversationId", 1).bool("done", false).binary("payload", 0, first.as_bytes()))
            } else {
                err(2, "BadValue", &format!("Unsupported mechanism '{mech}' on authentication database"))
            }
        }
        "saslcontinue" | "authenticate" => err(18, "AuthenticationFailed", "Authentication failed."),
        "" => err(59, "CommandNotFound", "no such command: ''"),
        "find" | "count" | "aggregate" | "listcollections" | "listindexes" | "insert" | "update" | "delete"
        | "dropdatabase" | "drop" | "create" | "createuser" | "eval" | "dbstats" | "collstats" => {
            err(13, "Unauthorized", &format!("command {name} requires authentication"))
        }
        _ => err(59, "CommandNotFound", &format!("no such command: '{}'", name.chars().take(64).collect::<String>())),
    };
    Outcome { reply, login }
}

/// The `Command` line recorded for a command: its name, database and the collection (when the
/// command's value is a string).
pub fn command_line(cmd: &Doc, db: &str) -> String {
    let name = cmd.first_key().unwrap_or("");
    match cmd.0.first().map(|(_, v)| v) {
        Some(Value::String(coll)) => format!("{name} db={db} collection={coll}"),
        _ => format!("{name} db={db}"),
    }
}

async fn read_message(session: &mut Session, max: usize) -> SessionResult<(wire::Header, Vec<u8>)> {
    let mut head = [0u8; 16];
    session.read_exact(&mut head).await?;
    let h = wire::parse_header(&head, max).ok_or(CloseReason::ProtocolError)?;
    let mut body = vec![0u8; h.length as usize - 16];
    session.read_exact(&mut body).await?;
    Ok((h, body))
}

pub(crate) async fn handle(session: &mut Session, _svc: &ServiceSection) -> SessionResult<()> {
    let connection_id = i32::from(rand::random::<u16>()) + 1000;
    let server_nonce: String = hex::encode(rand::random::<[u8; 18]>());
    let mut next_id = rand::random::<u16>() as i32;
    let caps: MongodbSection = session.services().mongodb;
    for _ in 0..caps.max_messages {
        let (h, body) = read_message(session, caps.max_message_bytes).await?;
        let cmd = match h.op_code {
            OP_MSG => wire::parse_op_msg(&body),
            OP_QUERY => wire::parse_op_query(&body),
            other => {
                session.emit(Detail::Command { line: format!("opcode {other}") });
                continue;
            }
        };
        let Ok(Command { doc, db }) = cmd else {
            session.emit(Detail::Command { line: format!("malformed opcode {}", h.op_code) });
            return Err(CloseReason::ProtocolError);
        };
        session.emit(Detail::Command { line: command_line(&doc, &db) });
        let out = answer(&doc, connection_id, &server_nonce);
        if let Some((user, mechanism)) = out.login {
            let auth_db =
                doc.get_doc("speculativeAuthenticate").and_then(|s| s.get_str("db")).map_or(db.clone(), str::to_string);
            session.emit(Detail::Login {
                username: user,
                secret: Secret::None,
                success: false,
                extra: vec![
                    ("method".into(), "mongodb-sasl".into()),
                    ("mechanism".into(), mechanism),
                    ("database".into(), auth_db),
                ],
            });
        }
        next_id = next_id.wrapping_add(1);
        let reply = if h.op_code == OP_MSG {
            wire::op_msg_reply(next_id, h.request_id, &out.reply)
        } else {
            wire::op_reply(next_id, h.request_id, &out.reply)
        };
        session.write_all(&reply).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(w: Writer) -> Doc {
        bson::read_document(&w.finish()).unwrap().0
    }

    #[test]
    fn hello_and_build_info_look_like_mongodb_6() {
        let out = answer(&doc(Writer::new().i32("hello", 1).bool("helloOk", true).str("$db", "admin")), 7, "n");
        let r = doc_of(&out.reply);
        assert_eq!(r.get("isWritablePrimary"), Some(&Value::Bool(true)));
        assert_eq!(r.get("maxWireVersion"), Some(&Value::Int32(17)));
        assert_eq!(r.get("ok"), Some(&Value::Double(1.0)));
        let r = doc_of(&answer(&doc(Writer::new().i32("isMaster", 1)), 7, "n").reply);
        assert_eq!(r.get("ismaster"), Some(&Value::Bool(true)));
        let r = doc_of(&answer(&doc(Writer::new().i32("buildinfo", 1)), 7, "n").reply);
        assert_eq!(r.get_str("version"), Some(VERSION));
        let r = doc_of(&answer(&doc(Writer::new().i32("listDatabases", 1)), 7, "n").reply);
        assert!(matches!(r.get("databases"), Some(Value::Array(a)) if a.0.len() == 3));
        let r = doc_of(&answer(&doc(Writer::new().i32("frobnicate", 1)), 7, "n").reply);
        assert_eq!(r.get("code"), Some(&Value::Int32(59)));
    }

    fn doc_of(b: &[u8]) -> Doc {
        bson::read_document(b).unwrap().0
    }

    #[test]
    fn scram_users_are_recorded_and_the_exchange_fails() {
        let start = Writer::new()
            .i32("saslStart", 1)
            .str("mechanism", "SCRAM-SHA-256")
            .binary("payload", 0, b"n,,n=ad=2Cmin,r=abcdef")
            .str("$db", "admin");
        let out = answer(&doc(start), 1, "xyz");
        assert_eq!(out.login, Some(("ad,min".into(), "SCRAM-SHA-256".into())));
        let r = doc_of(&out.reply);
        match r.get("payload") {
            Some(Value::Binary(_, p)) => {
                let p = String::from_utf8_lossy(p);
                assert!(p.starts_with("r=abcdefxyz,s=") && p.ends_with(",i=15000"), "{p}");
            }
            other => panic!("{other:?}"),
        }
        let r = doc_of(&answer(&doc(Writer::new().i32("saslContinue", 1)), 1, "xyz").reply);
        assert_eq!(r.get("code"), Some(&Value::Int32(18)));
        let spec =
            Writer::new().str("mechanism", "SCRAM-SHA-1").binary("payload", 0, b"n,,n=root,r=x").str("db", "admin");
        let out = answer(&doc(Writer::new().i32("hello", 1).doc("speculativeAuthenticate", spec)), 1, "x");
        assert_eq!(out.login, Some(("root".into(), "SCRAM-SHA-1".into())));
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x2701_7000_0002, 20_000, 128, false) {
            for cmd in [wire::parse_op_msg(&b), wire::parse_op_query(&b)].into_iter().flatten() {
                let _ = command_line(&cmd.doc, &cmd.db);
                let _ = answer(&cmd.doc, 1, "n");
            }
            let _ = scram_user(&b);
            let _ = client_nonce(&b);
        }
    }
}
