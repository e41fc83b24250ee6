#![no_main]
use drosera_sensor::protocols::mongodb::{self, bson, wire};
use libfuzzer_sys::fuzz_target;

// A client's message body as OP_MSG and as OP_QUERY, a bare BSON document, and the reply the
// emulation builds for whatever command parsed.
fuzz_target!(|data: &[u8]| {
    let _ = wire::parse_header(data, drosera_sensor::config::MongodbSection::default().max_message_bytes);
    if let Ok((_, n)) = bson::read_document(data) {
        assert!(n <= data.len());
    }
    for cmd in [wire::parse_op_msg(data), wire::parse_op_query(data)].into_iter().flatten() {
        let _ = mongodb::command_line(&cmd.doc, &cmd.db);
        let out = mongodb::answer(&cmd.doc, 1, "nonce");
        assert!(bson::read_document(&out.reply).is_ok());
    }
    let _ = mongodb::scram_user(data);
});
