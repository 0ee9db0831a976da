//! Where things live: the repository, and the cache directory under `$HOME`
//! that survives between runs (Go binaries, cluster state, downloads).

use std::path::PathBuf;

/// The repository root (the workspace this task crate belongs to): the
/// nearest directory around the working directory holding `scripts/kube`
/// and a `Cargo.lock` (`cargo xtask` runs from anywhere inside the tree).
///
/// Not baked in with `env!("CARGO_MANIFEST_DIR")`: checkouts that share a
/// `CARGO_TARGET_DIR` reuse each other's unchanged `xtask` binary, which must
/// act on the tree it was run from. The compile-time path is the fallback
/// for runs from outside any checkout.
pub fn repo_root() -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .find(|dir| dir.join("Cargo.lock").exists() && dir.join("scripts/kube").is_dir())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("scripts/ has a parent")
                .to_path_buf()
        })
}

/// The machine-wide cache: `$VIEWS_HOME`, or `~/.cache/views-gateway`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIEWS_HOME") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("views-gateway")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (CI keeps it under
/// `$HOME` so it survives fresh clones) or `target/` in the repository.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `target/bin/<arch>/` in the repository: where `compile` puts binaries.
pub fn bin_dir() -> PathBuf {
    repo_root()
        .join("target")
        .join("bin")
        .join(std::env::consts::ARCH)
}
