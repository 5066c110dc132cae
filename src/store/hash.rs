//! The SHA-256 of a file's bytes, computed as they are written so that a manifest costs no
//! second read; for large text files on a thread of its own ([`Hasher`]).

use sha2::{Digest as _, Sha256};

/// Text files larger than this are hashed on a thread of their own, from here on (see
/// [`Hasher`]).
pub(super) const HASH_APART: u64 = 256 << 20;
/// Bytes handed to the hashing thread at a time; a few buffers of this size go round.
const HASH_CHUNK: usize = 1 << 20;

/// The SHA-256 of a file's bytes, computed as they are written so the manifest costs no second
/// read. Beyond [`HASH_APART`] bytes it runs on a thread of its own: on the writing thread it
/// was a serial cost of every large file (perf, 10M ordered events to CSV: 18% of the
/// process's samples, about a second for the 2 GB), where copying the bytes to the hasher
/// costs a tenth of that. For text files only, and past 256 MB: a Parquet file (whose
/// encoding, not its writing, is the cost) gained nothing and its run peaked 10-20 MB higher
/// (16 MB threshold, 10M events: 215 -> 231 MB; 256 MB, 100M events: 195 -> 214 MB).
pub(super) enum Hasher {
    Here(Sha256),
    Apart {
        pending: Vec<u8>,
        chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
        /// Buffers the thread is done with, to fill again.
        spare: std::sync::mpsc::Receiver<Vec<u8>>,
        thread: std::thread::JoinHandle<Sha256>,
    },
}

impl Hasher {
    /// Adds `bytes`, written after `before` others.
    pub(super) fn update(&mut self, bytes: &[u8], before: u64, apart_from: u64) {
        match self {
            Hasher::Here(hash) if before.saturating_add(bytes.len() as u64) < apart_from => {
                hash.update(bytes)
            }
            Hasher::Here(hash) => {
                let (chunks, inbox) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
                let (done, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
                let mut state = hash.clone();
                let started = std::thread::Builder::new()
                    .name("export-events-hash".into())
                    .spawn(move || {
                        for mut chunk in inbox {
                            state.update(&chunk);
                            chunk.clear();
                            let _ = done.try_send(chunk);
                        }
                        state
                    });
                // Without a thread, the hash goes on here.
                let Ok(thread) = started else {
                    return hash.update(bytes);
                };
                *self = Hasher::Apart {
                    pending: Vec::with_capacity(HASH_CHUNK),
                    chunks,
                    spare,
                    thread,
                };
                self.update(bytes, before, apart_from);
            }
            Hasher::Apart {
                pending,
                chunks,
                spare,
                ..
            } => {
                // A large write (a Parquet column chunk) goes over in chunks too, so that at
                // most a few chunks are held, however far the hasher is behind.
                let mut rest = bytes;
                while !rest.is_empty() {
                    let room = HASH_CHUNK - pending.len();
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    pending.extend_from_slice(now);
                    rest = later;
                    if pending.len() == HASH_CHUNK {
                        let next = spare
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(HASH_CHUNK));
                        let full = std::mem::replace(pending, next);
                        // The thread only ends when this side is dropped.
                        let _ = chunks.send(full);
                    }
                }
            }
        }
    }

    /// The state after every byte: the thread, if any, is done with.
    pub(super) fn finish(&mut self) -> Sha256 {
        let state = match std::mem::replace(self, Hasher::Here(Sha256::new())) {
            Hasher::Here(hash) => hash,
            Hasher::Apart {
                pending,
                chunks,
                thread,
                ..
            } => {
                let _ = chunks.send(pending);
                drop(chunks);
                thread.join().expect("hashing cannot panic")
            }
        };
        *self = Hasher::Here(state.clone());
        state
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_is_hashed_apart_to_the_same_digest() {
        // Past the threshold in uneven pieces (one larger than a chunk), with a digest asked
        // for midway and at the end, against the same bytes hashed in one place.
        let total = HASH_APART + 3 * HASH_CHUNK as u64 + 12_345;
        let (mut hasher, mut reference) = (Hasher::Here(Sha256::new()), Sha256::new());
        let mut written = 0u64;
        let mut asked_midway = false;
        while written < total {
            let size = if written.is_multiple_of(3) {
                3 * HASH_CHUNK + 7
            } else {
                700_001
            };
            let size = size.min((total - written) as usize);
            let piece: Vec<u8> = (0..size)
                .map(|i| ((written as usize + i) % 251) as u8)
                .collect();
            hasher.update(&piece, written, HASH_APART);
            reference.update(&piece);
            written += size as u64;
            if written > HASH_APART && !asked_midway {
                asked_midway = true;
                assert_eq!(hasher.finish().finalize(), reference.clone().finalize());
            }
        }
        assert!(asked_midway);
        assert_eq!(hasher.finish().finalize(), reference.finalize());
    }
}
