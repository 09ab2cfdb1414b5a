//! The kv actor links `std` (its map grows and shrinks over the task's life, which wants a
//! general allocator), whose default 1 MiB stack would outgrow the host's default memory cap
//! of 1 MiB and make `make run` size every slot of the instance pool for a larger one. Its
//! calls are shallow: a 64 KiB stack leaves the rest of the cap to its entries.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size={}", 64 * 1024);
    }
}
