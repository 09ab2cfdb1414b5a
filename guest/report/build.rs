//! Like the default worker, a `no_std` component in one page of linear memory: a 2 KiB stack
//! placed first, so stack top, data and the first allocations share a page.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size={}", 2 * 1024);
    }
}
