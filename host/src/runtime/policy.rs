//! What a guest may reach: the imports a worker component may declare, checked before anything
//! is compiled, and the linker every worker goes through (the `host` interface and WASI with
//! nothing granted, blocking polls refused).

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::DynPollable;

use super::LoadError;
use super::bindings::{v1, v2, v3};
use super::process::{BlockingRefused, TaskState, WASI_IO_POLL};

/// What a worker may import, by interface name without its version: the host's own interface,
/// and the WASI interfaces that Rust's `std` pulls in, all linked with nothing granted. Sockets
/// and everything else are refused before a module is published, not failed at run time.
const ALLOWED_IMPORTS: &[&str] = &[
    "http-spawn:worker/host",
    "http-spawn:worker/types",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Reads the component's own imports, before anything is compiled, and refuses a module that is
/// not a component or that imports anything beyond [`ALLOWED_IMPORTS`]. Imports of the modules
/// nested inside are the component's business: they can only be satisfied from within it.
pub(super) fn check_imports(bytes: &[u8]) -> Result<(), LoadError> {
    use wasmparser::{Encoding, Parser, Payload};
    let malformed = |e: wasmparser::BinaryReaderError| LoadError::NotComponent(e.to_string());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(LoadError::NotComponent(
                    "this is a core wasm module; a worker is a component (build for \
                     wasm32-wasip2, or wrap the module with `wasm-tools component new`)"
                        .into(),
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let name = import.map_err(malformed)?.name.name;
                    let interface = name
                        .split_once('@')
                        .map_or(name, |(interface, _)| interface);
                    if !ALLOWED_IMPORTS.contains(&interface) {
                        return Err(LoadError::ForbiddenImport {
                            import: name.to_owned(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The linker every worker is instantiated through: the `host` interface of both contracts
/// (0.1.0 and 0.2.0, side by side) and WASI with nothing granted, and blocking polls refused.
pub(super) fn linker(engine: &Engine) -> wasmtime::Result<Linker<TaskState>> {
    let mut linker = Linker::new(engine);
    v1::Worker::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)?;
    v2::Worker::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)?;
    v3::Worker::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |state| state)?;
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // A blocking poll would hold a scheduler thread (and every task on it) for as long as the
    // guest liked. Replace both ways to block with a trap that says what to do instead.
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "poll",
        |_, (_,): (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
            Err(BlockingRefused.into())
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_,): (Resource<DynPollable>,)| -> wasmtime::Result<()> { Err(BlockingRefused.into()) },
    )?;
    Ok(linker)
}
