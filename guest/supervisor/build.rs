//! A supervisor's calls are shallow, so it needs far less than Rust's default 1 MiB stack,
//! which alone would not fit the host's default 1 MiB memory cap. 64 KiB leaves room for
//! serde_json's recursion into a deeply nested child payload (it stops at 128 levels).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size={}", 64 * 1024);
    }
}
