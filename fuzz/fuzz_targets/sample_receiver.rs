#![no_main]
//! The admin's sample receiver (`samples::receiver`) fed what a hostile sensor could send: the
//! frames in `data` (sample offers and chunks, read with the admin's frame reader), against one
//! store on disk. Checks: never a panic; a rejected transfer leaves no part file; a chunk is
//! acknowledged only inside the offered size; a complete part is verified and then gone.
use drosera_admin::samples::classify::Classifier;
use drosera_admin::samples::receiver::{verify, ChunkResult, Receiver, SampleContext};
use drosera_admin::samples::store::SampleStore;
use drosera_admin::samples::SamplesConfig;
use drosera_uplink::frame::{self, Frame};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

fn ctx() -> &'static Arc<SampleContext> {
    static CTX: OnceLock<Arc<SampleContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("drosera-fuzz-receiver-{}", std::process::id()));
        let cfg = SamplesConfig { dir: dir.clone(), max_sample_bytes: 4096, max_parts: 8, ..Default::default() };
        Arc::new(SampleContext {
            store: SampleStore::open(&dir).expect("store"),
            classifier: Classifier::load(None).expect("rules"),
            counters: Default::default(),
            max_chunk: 512,
            cfg,
        })
    })
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    let ctx = ctx();
    let mut r = Receiver::new(ctx.clone(), 1);
    let mut sizes = std::collections::HashMap::new();
    rt().block_on(async {
        let mut input = data;
        for _ in 0..64 {
            let Ok(Some(f)) = frame::read_frame(&mut input, 8192).await else { break };
            match f {
                Frame::SampleOffer { samples } => {
                    for s in &samples {
                        sizes.insert(s.sha256, s.size);
                    }
                    let _ = r.answer_offer(&samples, &HashSet::new());
                }
                Frame::SampleChunk { sha256, offset, size, data } => {
                    let part = ctx.store.part_of(&sha256, 1);
                    match r.on_chunk(&sha256, offset, size, &data) {
                        ChunkResult::Ack(next) => {
                            assert!(next <= size && Some(&size) == sizes.get(&sha256), "ack outside the offer");
                        }
                        ChunkResult::Reject { .. } => assert!(!part.exists(), "a rejected part was kept"),
                        ChunkResult::Complete(p) => {
                            let _ = verify(ctx, &sha256, &p);
                            assert!(!p.exists(), "a verified part was kept");
                        }
                    }
                }
                _ => {}
            }
        }
    });
});
