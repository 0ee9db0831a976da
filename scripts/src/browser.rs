//! Chromium for the browser tests: Debian's package (Playwright drives it
//! through `playwright-core`; no browser download), installed if missing.

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub fn ensure() -> anyhow::Result<()> {
    crate::cmd::ensure_debian_package(CHROMIUM, "chromium")
}
