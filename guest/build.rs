//! The default worker is a `no_std` component that runs in one page of linear memory: with a
//! 2 KiB stack placed first, the top of its stack, its data and its first allocations share the
//! same 4 KiB page, and the whole fits the one 64 KiB page the module declares. Its calls are
//! shallow; a deeper one would overflow the stack, which traps (the stack lies at the bottom of
//! memory), never corrupts.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size={}", 2 * 1024);
    }
}
