//! Feeds arbitrary bytes, in arbitrary chunks, to the control-frame decoder with the engine's
//! real message types. It must return messages or errors — never panic, never allocate past
//! the frame limit.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run frame_decoder`
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_engine::protocol::{FetchRequest, ToDriver, ToExecutor};
use sluice_net::MessageCodec;
use tokio_util::codec::Decoder;

fn drain<T: serde::de::DeserializeOwned>(data: &[u8], chunk: usize) {
    let mut codec = MessageCodec::<T>::new(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let chunk = data.first().copied().unwrap_or(1) as usize;
    drain::<ToDriver>(data, chunk);
    drain::<ToExecutor>(data, chunk);
    drain::<FetchRequest>(data, chunk);
});
