#!/usr/bin/env bash
# Builds the default worker as it was before the SDK (the 0.1.0 contract, hand-written step
# machine), from git history, so `make bench` can measure it beside today's default worker in
# the same run. Prints the component's path.
#
# BASELINE_COMMIT picks the commit (default: the last one before issue #13). Needs the repo's
# git history, and the crates already in cargo's cache (wit-bindgen, as the workspace pins it).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
commit="${BASELINE_COMMIT:-5ec5dd1}"
dir="$root/target/baseline-guest/$commit"
out="$dir/target/wasm32-wasip2/guest/http_spawn_guest_baseline.wasm"
if [[ -f "$out" ]]; then
    echo "$out"
    exit 0
fi
mkdir -p "$dir/src" "$dir/wit"
git -C "$root" show "$commit:guest/src/lib.rs" > "$dir/src/lib.rs"
git -C "$root" show "$commit:guest/src/arena.rs" > "$dir/src/arena.rs"
git -C "$root" show "$commit:guest/build.rs" > "$dir/build.rs"
git -C "$root" show "$commit:wit/worker.wit" > "$dir/wit/worker.wit"
# The crate read its WIT from ../wit; here it sits beside it.
sed -i 's|path: "../wit"|path: "wit"|' "$dir/src/lib.rs"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "http-spawn-guest-baseline"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = { version = "=0.61.1", default-features = false, features = ["macros", "realloc"] }

# Outside the workspace, with the workspace's guest profile.
[workspace]

[profile.guest]
inherits = "release"
opt-level = "s"
lto = true
codegen-units = 1
debug = false
strip = "debuginfo"
TOML
cp "$root/Cargo.lock" "$dir/Cargo.lock"
(cd "$dir" && cargo build --quiet --target wasm32-wasip2 --profile guest --lib \
    --target-dir "$dir/target" 2>&1 >&2) || (cd "$dir" && cargo build --offline --quiet \
    --target wasm32-wasip2 --profile guest --lib --target-dir "$dir/target" >&2)
echo "$out"
