//! `sqlx::migrate!` (`src/db.rs`) embeds each file of `migrations/` with `include_str!`, so
//! Cargo rebuilds this crate when one of them changes, but not when a migration is added: the
//! new file is not among those it tracks, and the build would go on without it. Watching the
//! directory covers that.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
