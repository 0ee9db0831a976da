//! Chromium for the browser tests: Debian's package (Playwright drives it
//! through `playwright-core`; no browser download), installed if missing.

use std::path::Path;
use std::process::Command;

use anyhow::bail;

use crate::progress;

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub fn ensure() -> anyhow::Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    let step = progress::step("installing Chromium (apt-get install chromium)");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium"],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !status.success() {
            bail!(
                "apt-get {} failed (root and Debian's package registry are needed)",
                args.join(" ")
            );
        }
    }
    step.done();
    Ok(())
}
