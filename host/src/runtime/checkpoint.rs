//! Checkpoints: a task's state read out of its instance between two steps, and written back
//! into a fresh instance of the same module, so that the task resumes where it was.
//!
//! Between two steps a task is stackless: no frame of its guest is live, and its whole state is
//! its linear memory past its stack (its data and heap). The worker exports the optional
//! `checkpoint` interface of `wit/worker.wit` (the SDK's workers do), which says where that
//! range lies and moves it in 120-byte chunks through calls that allocate nothing in the guest.
//! wasmtime offers no way to read a component's inner memory outside its debugging mode
//! (`Config::guest_debug`, which instruments every operator of every module), so the guest
//! lends a hand: an SDK worker pays nothing for it until a checkpoint is taken.
//!
//! What a checkpoint cannot carry it refuses, with the reason, and the task runs again from its
//! start as without one: a worker that does not export the interface (built without the SDK,
//! or against contract 0.1.0 or 0.2.0), and a task that holds host resources (WASI streams) at
//! the time, whose handles would mean nothing in another instance.
//!
//! The image a checkpoint gives is `hsck`, a version byte, the extent (start, end, zeroed-from,
//! as little-endian u32s), then the bytes from start to end in 120-byte chunks: a bitmap of
//! the chunks that are not all zero, and those chunks. A `std` worker's heap is mostly zeros.

use std::sync::{Arc, OnceLock};

use super::bindings::checkpoint::exports::http_spawn::worker::checkpoint::{Chunk, Extent};
use super::bindings::checkpoint::{CheckpointOnly, CheckpointOnlyIndices};
use super::process::{Process, refuel, spent};

/// Bytes in one chunk: 15 words.
const CHUNK_BYTES: u32 = 120;

/// The image's magic and version.
const MAGIC: &[u8; 4] = b"hsck";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 4 + 1 + 3 * 4;

/// What a module that exports the checkpoint interface needs to checkpoint its tasks: the
/// interface's place in its instances, and its state as a fresh instance holds it (the
/// pristine state), which images leave out: a fresh instance already holds it.
pub(super) struct Support {
    pub(super) indices: CheckpointOnlyIndices,
    pristine: OnceLock<Vec<u8>>,
}

impl Support {
    pub(super) fn new(indices: CheckpointOnlyIndices) -> Arc<Self> {
        Arc::new(Self {
            indices,
            pristine: OnceLock::new(),
        })
    }

    /// Learns the pristine state from `fresh`, an instance that has run nothing. Without it,
    /// images keep every chunk below the module's zeroed data, and every non-zero one above.
    pub(super) fn learn(&self, fresh: &mut Process) {
        match fresh.read_state() {
            Ok((_, bytes)) => {
                let _ = self.pristine.set(bytes);
            }
            Err(refused) => tracing::debug!(%refused, "a module's pristine state was not read"),
        }
    }

    /// Whether chunk `index` of a state, `chunk`, differs from a fresh instance's.
    fn differs(&self, index: usize, chunk: &[u8], start: u32, zeroed_from: u32) -> bool {
        let at = index * CHUNK_BYTES as usize;
        match self.pristine.get() {
            Some(pristine) => chunk
                .iter()
                .enumerate()
                .any(|(i, &byte)| byte != pristine.get(at + i).copied().unwrap_or(0)),
            None => (start as usize + at) < zeroed_from as usize || chunk.iter().any(|&b| b != 0),
        }
    }
}

/// A task's state as a checkpoint keeps it: where it lies in linear memory, and the chunks of
/// it that differ from a fresh instance's, by their index from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    start: u32,
    end: u32,
    zeroed_from: u32,
    chunks: Vec<(u32, Vec<u8>)>,
}

impl Image {
    /// The image as stored: a bitmap of the chunks it keeps, and those chunks.
    pub fn encode(&self) -> Vec<u8> {
        let count = self.chunk_count();
        let mut bitmap = vec![0u8; count.div_ceil(8)];
        let kept: usize = self.chunks.iter().map(|(_, bytes)| bytes.len()).sum();
        for (index, _) in &self.chunks {
            let i = *index as usize;
            bitmap[i / 8] |= 1 << (i % 8);
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + bitmap.len() + kept);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        for word in [self.start, self.end, self.zeroed_from] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&bitmap);
        for (_, bytes) in &self.chunks {
            out.extend_from_slice(bytes);
        }
        out
    }

    /// An image read back from the store; an error says what is wrong with it.
    pub fn decode(stored: &[u8]) -> Result<Self, String> {
        if stored.len() < HEADER_BYTES || &stored[..4] != MAGIC {
            return Err("not a checkpoint image".into());
        }
        if stored[4] != VERSION {
            return Err(format!("checkpoint image version {} is unknown", stored[4]));
        }
        let word = |at: usize| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&stored[at..at + 4]);
            u32::from_le_bytes(bytes)
        };
        let (start, end, zeroed_from) = (word(5), word(9), word(13));
        let cut = || "the checkpoint image is cut short or inconsistent".to_owned();
        let len = end.checked_sub(start).ok_or_else(cut)? as usize;
        let chunk = CHUNK_BYTES as usize;
        let count = len.div_ceil(chunk);
        let rest = &stored[HEADER_BYTES..];
        if rest.len() < count.div_ceil(8) {
            return Err(cut());
        }
        let (bitmap, mut kept) = rest.split_at(count.div_ceil(8));
        let mut chunks = Vec::new();
        for i in 0..count {
            if bitmap[i / 8] & (1 << (i % 8)) == 0 {
                continue;
            }
            let size = chunk.min(len - i * chunk);
            if kept.len() < size {
                return Err(cut());
            }
            chunks.push((i as u32, kept[..size].to_vec()));
            kept = &kept[size..];
        }
        if !kept.is_empty() {
            return Err(cut());
        }
        Ok(Self {
            start,
            end,
            zeroed_from,
            chunks,
        })
    }

    /// Bytes of guest state it stands for.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether it stands for no state at all.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    fn chunk_count(&self) -> usize {
        self.len().div_ceil(CHUNK_BYTES as usize)
    }

    fn extent(&self) -> Extent {
        Extent {
            start: self.start,
            end: self.end,
            zeroed_from: self.zeroed_from,
        }
    }
}

/// Why a task's state cannot be taken, or put back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Process {
    /// The checkpoint interface of this task's instance, if its worker exports one.
    fn checkpoint_guest(&mut self) -> Result<(CheckpointOnly, Arc<Support>), Refused> {
        let Some((support, instance)) = self.checkpoint.as_ref() else {
            return Err(Refused(
                "its worker does not export http-spawn:worker/checkpoint (build it with \
                 http-spawn-sdk on contract 0.3.0)"
                    .into(),
            ));
        };
        let (support, instance) = (Arc::clone(support), *instance);
        let guest = support
            .indices
            .load(&mut self.store, &instance)
            .map_err(|error| Refused(format!("its checkpoint interface is unusable: {error:#}")))?;
        Ok((guest, support))
    }

    /// The guest's state now: where it lies, and its bytes. The reads burn fuel like a step.
    fn read_state(&mut self) -> Result<(Extent, Vec<u8>), Refused> {
        let (guest, _) = self.checkpoint_guest()?;
        let guest = guest.http_spawn_worker_checkpoint();
        refuel(&mut self.store, self.budget);
        let result = (|| {
            let extent = match guest.call_locate(&mut self.store) {
                Ok(Ok(extent)) => extent,
                Ok(Err(reason)) => return Err(Refused(reason)),
                Err(error) => return Err(Refused(format!("its `locate` failed: {error:#}"))),
            };
            let max = self.store.data().max_memory_bytes;
            if extent.end < extent.start || (extent.end - extent.start) as usize > max {
                return Err(Refused(format!(
                    "its `locate` gave an extent that cannot be: {}..{}",
                    extent.start, extent.end
                )));
            }
            let mut bytes = Vec::with_capacity((extent.end - extent.start) as usize);
            let mut at = extent.start;
            while at < extent.end {
                let chunk = guest
                    .call_read(&mut self.store, at)
                    .map_err(|error| Refused(format!("its `read` failed: {error:#}")))?;
                bytes.extend_from_slice(&chunk_bytes(&chunk));
                at = at.saturating_add(CHUNK_BYTES);
            }
            bytes.truncate((extent.end - extent.start) as usize);
            Ok((extent, bytes))
        })();
        self.fuel += spent(&self.store, self.budget);
        result
    }

    /// Reads the task's state out, between two steps: an image that [`Module::resume`]
    /// (`super::Module`) puts back into a fresh instance.
    pub fn checkpoint(&mut self) -> Result<Image, Refused> {
        if let Some(wasi) = &self.store.data().wasi
            && !wasi.table_is_empty()
        {
            return Err(Refused(
                "it holds host resources (WASI streams) that a checkpoint cannot carry".into(),
            ));
        }
        let (_, support) = self.checkpoint_guest()?;
        let (extent, bytes) = self.read_state()?;
        let chunks = bytes
            .chunks(CHUNK_BYTES as usize)
            .enumerate()
            .filter(|(i, chunk)| support.differs(*i, chunk, extent.start, extent.zeroed_from))
            .map(|(i, chunk)| (i as u32, chunk.to_vec()))
            .collect();
        Ok(Image {
            start: extent.start,
            end: extent.end,
            zeroed_from: extent.zeroed_from,
            chunks,
        })
    }

    /// Writes `image` into this fresh instance, which has run neither `start` nor a step, and
    /// sets the steps it had done: it goes on from there with `step`.
    pub(super) fn restore(&mut self, image: &Image, steps_done: u32) -> Result<(), Refused> {
        let (guest, _) = self.checkpoint_guest()?;
        let guest = guest.http_spawn_worker_checkpoint();
        refuel(&mut self.store, self.budget);
        let result = (|| {
            match guest.call_prepare(&mut self.store, image.extent()) {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(Refused(reason)),
                Err(error) => return Err(Refused(format!("its `prepare` failed: {error:#}"))),
            }
            // Every other chunk is as a fresh instance holds it.
            for (index, bytes) in &image.chunks {
                let at = image.start + index * CHUNK_BYTES;
                guest
                    .call_write(&mut self.store, at, to_chunk(bytes))
                    .map_err(|error| Refused(format!("its `write` failed: {error:#}")))?;
            }
            Ok(())
        })();
        self.fuel += spent(&self.store, self.budget);
        result?;
        self.store.data_mut().step = steps_done;
        Ok(())
    }
}

/// What `make bench` measures of checkpoints, in-process (see [`bench_checkpoints`]).
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct CheckpointFigures {
    /// Guest state in an image, the part of it that differs from a fresh instance's, and the
    /// image as stored (those chunks, a bitmap and a header).
    pub image_bytes: usize,
    pub kept_bytes: usize,
    pub stored_bytes: usize,
    /// Each round's instantiate + `start` + first step: a task's start, the baseline.
    pub start_ns: Vec<u64>,
    /// Each round's checkpoint of the task, waiting after its first step, to stored bytes.
    pub capture_ns: Vec<u64>,
    /// Each round's resumption from those bytes: decode, instantiate, write back.
    pub restore_ns: Vec<u64>,
}

/// For `make bench`: `rounds` tasks of the worker in `bytes` (memory cap `max_memory_bytes`,
/// started with `payload` and `duration`), each started and stepped once, checkpointed,
/// dropped and resumed, each phase timed.
#[doc(hidden)]
pub fn bench_checkpoints(
    bytes: &[u8],
    max_memory_bytes: usize,
    payload: Option<&str>,
    duration: u32,
    rounds: usize,
) -> anyhow::Result<CheckpointFigures> {
    use std::sync::Arc;
    use std::time::Instant;

    use super::{Sandbox, SandboxConfig, StartSpec, TaskLimits, WorkerLimits};
    use crate::actor::Wake;
    use crate::model::Pid;

    let sandbox = Sandbox::new(SandboxConfig {
        max_memory_bytes,
        max_log_bytes: 64 << 10,
        max_sends_per_step: 100,
        max_result_bytes: 1 << 20,
        capacity: 64,
        epoch_interruption: true,
        cache_dir: None,
    })?;
    let worker: Arc<str> = Arc::from("bench");
    let limits = WorkerLimits {
        fuel_per_step: 100_000_000,
        max_memory_bytes,
    };
    let module = sandbox.load(&worker, bytes, limits)?;
    let name: Arc<str> = Arc::from("checkpointed");
    let mut figures = CheckpointFigures::default();
    for round in 0..rounds {
        let pid = Pid::new(1, round as u64 + 1);
        let begun = Instant::now();
        let mut process = module
            .instantiate(pid, TaskLimits::unlimited())
            .map_err(|end| anyhow::anyhow!("instantiate: {end:?}"))?;
        let spec = StartSpec {
            pid,
            name: &name,
            duration_secs: duration,
            payload,
            parent: None,
            attempt: 1,
        };
        process
            .start(&spec)
            .map_err(|end| anyhow::anyhow!("start: {end:?}"))?;
        process
            .step(Wake::Started)
            .map_err(|end| anyhow::anyhow!("step: {end:?}"))?;
        let started = Instant::now();
        let stored = process.checkpoint()?.encode();
        let captured = Instant::now();
        drop(process);
        let image = Image::decode(&stored).map_err(|reason| anyhow::anyhow!(reason))?;
        figures.kept_bytes = image.chunks.iter().map(|(_, bytes)| bytes.len()).sum();
        let before = Instant::now();
        let resumed = module.resume(pid, TaskLimits::unlimited(), &image, &name, 0)?;
        let restored = Instant::now();
        drop(resumed);
        let ns = |from: Instant, to: Instant| to.duration_since(from).as_nanos() as u64;
        figures.start_ns.push(ns(begun, started));
        figures.capture_ns.push(ns(started, captured));
        figures.restore_ns.push(ns(before, restored));
        figures.image_bytes = image.len();
        figures.stored_bytes = stored.len();
    }
    Ok(figures)
}

fn chunk_bytes(chunk: &Chunk) -> [u8; CHUNK_BYTES as usize] {
    let words = [
        chunk.w0, chunk.w1, chunk.w2, chunk.w3, chunk.w4, chunk.w5, chunk.w6, chunk.w7, chunk.w8,
        chunk.w9, chunk.w10, chunk.w11, chunk.w12, chunk.w13, chunk.w14,
    ];
    let mut bytes = [0u8; CHUNK_BYTES as usize];
    for (i, word) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

/// Up to 120 bytes as a chunk, zero-padded.
fn to_chunk(bytes: &[u8]) -> Chunk {
    let mut padded = [0u8; CHUNK_BYTES as usize];
    padded[..bytes.len()].copy_from_slice(bytes);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&padded[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    Chunk {
        w0: word(0),
        w1: word(1),
        w2: word(2),
        w3: word(3),
        w4: word(4),
        w5: word(5),
        w6: word(6),
        w7: word(7),
        w8: word(8),
        w9: word(9),
        w10: word(10),
        w11: word(11),
        w12: word(12),
        w13: word(13),
        w14: word(14),
    }
}

#[cfg(test)]
mod tests {
    //! The differential test: for each worker and every point between two steps, a task
    //! checkpointed there, dropped and resumed in a fresh instance does what the uninterrupted
    //! task does, step for step: the same requests, log lines, result and exit.

    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::actor::Wake;
    use crate::model::Pid;
    use crate::runtime::{
        Module, Next, Sandbox, SandboxConfig, StartSpec, TaskLimits, WorkerLimits,
    };

    fn sandbox() -> Sandbox {
        Sandbox::new(SandboxConfig {
            max_memory_bytes: 16 << 20,
            max_log_bytes: 64 << 10,
            max_sends_per_step: 100,
            max_result_bytes: 1 << 20,
            capacity: 16,
            epoch_interruption: false,
            cache_dir: None,
        })
        .expect("sandbox")
    }

    fn guest(file: &str) -> Vec<u8> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/guest");
        let path = dir.join(file);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build the guests first: make build-guest)",
                path.display()
            )
        })
    }

    fn load(sandbox: &Sandbox, file: &str) -> Module {
        let limits = WorkerLimits {
            fuel_per_step: 1_000_000_000,
            max_memory_bytes: 16 << 20,
        };
        sandbox
            .load(&Arc::from(file), &guest(file), limits)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// What a task did, step by step: each step's request and the lines it logged.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Transcript(Vec<String>);

    impl Transcript {
        fn note(&mut self, process: &Process, what: String) {
            let (lines, _) = process.capture().take();
            for line in lines {
                self.0
                    .push(format!("log {:?} {}", line.source, line.message));
            }
            self.0.push(what);
        }
    }

    const NAME: &str = "differential";

    fn spec<'a>(name: &'a Arc<str>, payload: Option<&'a str>, duration: u32) -> StartSpec<'a> {
        StartSpec {
            pid: Pid::new(7, 1),
            name,
            duration_secs: duration,
            payload,
            parent: None,
            attempt: 1,
        }
    }

    /// Steps `process` from `wake` until it ends or `stop_after` more steps have run; returns
    /// the wake for the next step, or `None` once it ended.
    fn drive(
        process: &mut Process,
        mut wake: Wake,
        transcript: &mut Transcript,
        stop_after: Option<usize>,
    ) -> Option<Wake> {
        let mut steps = 0;
        loop {
            if stop_after == Some(steps) {
                return Some(wake);
            }
            steps += 1;
            let next = process.step(wake);
            transcript.note(process, format!("{next:?}"));
            wake = match next {
                Ok(Next::Sleep(_)) => {
                    process.woke();
                    Wake::Slept
                }
                Ok(Next::Receive(_)) => Wake::Timeout,
                Ok(Next::Await(_)) | Ok(Next::Done(..)) | Ok(Next::Failed(_)) | Err(_) => {
                    return None;
                }
            };
        }
    }

    /// A task of `module` instantiated and started, with its transcript so far.
    fn started(module: &Module, payload: Option<&str>, duration: u32) -> (Process, Transcript) {
        let name: Arc<str> = Arc::from(NAME);
        let mut transcript = Transcript::default();
        let mut process = module
            .instantiate(Pid::new(7, 1), TaskLimits::unlimited())
            .expect("instantiate");
        let planned = process.start(&spec(&name, payload, duration));
        transcript.note(&process, format!("start {planned:?}"));
        (process, transcript)
    }

    fn uninterrupted(module: &Module, payload: Option<&str>, duration: u32) -> (Transcript, usize) {
        let (mut process, mut transcript) = started(module, payload, duration);
        let before = transcript.0.len();
        drive(&mut process, Wake::Started, &mut transcript, None);
        let steps = transcript
            .0
            .iter()
            .skip(before)
            .filter(|l| !l.starts_with("log "))
            .count();
        (transcript, steps)
    }

    /// Runs `k` steps, checkpoints, drops the instance, resumes a fresh one from the image and
    /// runs it to its end. `Err` if the checkpoint was refused.
    fn interrupted(
        module: &Module,
        payload: Option<&str>,
        duration: u32,
        k: usize,
    ) -> Result<Transcript, Refused> {
        let name: Arc<str> = Arc::from(NAME);
        let (mut process, mut transcript) = started(module, payload, duration);
        let Some(wake) = drive(&mut process, Wake::Started, &mut transcript, Some(k)) else {
            panic!("ended before step {k}");
        };
        let image = Image::decode(&process.checkpoint()?.encode()).expect("decodes");
        let steps = process.steps_done();
        drop(process);
        let mut resumed = module
            .resume(
                Pid::new(7, 1),
                TaskLimits::unlimited(),
                &image,
                &name,
                steps,
            )
            .expect("resumes");
        assert_eq!(resumed.steps_done(), steps);
        drive(&mut resumed, wake, &mut transcript, None);
        Ok(transcript)
    }

    #[test]
    fn an_image_reads_back_as_written_and_refuses_a_cut_one() {
        let image = Image {
            start: 2048,
            end: 3048,
            zeroed_from: 2500,
            chunks: vec![(0, vec![1; 120]), (8, vec![9; 40])],
        };
        let stored = image.encode();
        assert_eq!(stored.len(), HEADER_BYTES + 2 + 120 + 40);
        assert_eq!(Image::decode(&stored), Ok(image));
        for cut in [0, 4, HEADER_BYTES, stored.len() - 1] {
            assert!(Image::decode(&stored[..cut]).is_err(), "{cut}");
        }
        let mut longer = stored.clone();
        longer.push(0);
        assert!(Image::decode(&longer).is_err());
    }

    /// Every worker that can be checkpointed gives, resumed after any step, what it gives
    /// uninterrupted; the others are refused with a reason.
    #[test]
    fn a_resumed_task_does_what_an_uninterrupted_one_does() {
        let sandbox = sandbox();
        let cases: &[(&str, Option<&str>, u32)] = &[
            ("http_spawn_guest.wasm", None, 4),
            ("http_spawn_guest.wasm", Some(r#"{"exit_code": 3}"#), 2),
            ("http_spawn_report.wasm", Some(r#"{"rows": 50}"#), 2),
            ("examples/exit7.wasm", None, 0),
            ("examples/empty.wasm", None, 0),
            (
                "examples/actor.wasm",
                Some(
                    r#"{"script": [{"op": "sleep", "ms": 1}, {"op": "receive", "timeout_ms": 5},
                        {"op": "register", "name": "me"}, {"op": "sleep", "ms": 1},
                        {"op": "receive", "timeout_ms": 1}]}"#,
                ),
                0,
            ),
            ("http_spawn_kv.wasm", None, 0),
            (
                "examples/actor.wasm",
                Some(r#"{"script": [{"op": "print", "text": "out"}, {"op": "sleep", "ms": 1}]}"#),
                0,
            ),
        ];
        let mut checked = 0;
        for &(file, payload, duration) in cases {
            let module = load(&sandbox, file);
            let (expected, steps) = uninterrupted(&module, payload, duration);
            for k in 1..steps {
                match interrupted(&module, payload, duration, k) {
                    Ok(transcript) => {
                        assert_eq!(
                            transcript, expected,
                            "{file} resumed after step {k} of {steps}"
                        );
                        checked += 1;
                    }
                    Err(refused) => {
                        eprintln!("{file}: refused after step {k}: {refused}");
                        assert!(!refused.0.is_empty());
                    }
                }
            }
            eprintln!(
                "{file}: {steps} steps, {}",
                if module.checkpointable() {
                    "checkpointable"
                } else {
                    "not checkpointable"
                }
            );
        }
        assert!(checked > 8, "only {checked} resumptions compared");
    }
}
