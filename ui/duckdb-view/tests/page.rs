//! The page in a real browser: Debian's Chromium driven by playwright-core
//! (tests/page/page.mjs) against the view on a real S3 server: schema
//! browser, query, quick chart, CSV and Parquet downloads, history, errors,
//! cancel, the keyboard alone, a 375 px screen, text contrast, and
//! axe-core's WCAG 2.1 A/AA and best-practice rules. Screenshots
//! and the downloads land in `target/tmp/duckdb-view-page/`.
//!
//! Needs `/usr/bin/chromium` (`apt-get update && apt-get install -y chromium`,
//! or set CHROMIUM) and Node; the test installs playwright-core and axe-core itself
//! (`npm ci` in tests/page, pinned by its lock file) when it is missing.
//! Without Chromium the test is skipped with a note, unless
//! VIEWS_REQUIRE_BROWSER=1 (CI sets it) makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Fixture;
use googletest::prelude::*;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.is_file().then_some(path)
}

fn skip_or_fail(reason: &str) {
    if std::env::var_os("VIEWS_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
        panic!("{reason}");
    }
    eprintln!("SKIPPED the page test: {reason}");
}

fn ensure_playwright(dir: &Path) -> std::result::Result<(), String> {
    let installed = ["playwright-core", "axe-core"].iter().all(|package| {
        dir.join(format!("node_modules/{package}/package.json"))
            .is_file()
    });
    if installed {
        return Ok(());
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running npm ci: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "npm ci failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

#[gtest]
#[tokio::test]
async fn the_workspace_page_works_in_chromium_with_mouse_keyboard_and_a_narrow_screen() {
    let Some(chromium) = chromium() else {
        skip_or_fail(
            "no Chromium at /usr/bin/chromium (apt-get update && apt-get install -y chromium)",
        );
        return;
    };
    let script_dir = manifest_dir().join("tests/page");
    if let Err(reason) = ensure_playwright(&script_dir) {
        skip_or_fail(&reason);
        return;
    }
    let view = Fixture::start(&[]).await;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("duckdb-view-page");
    let base = format!("http://{}", view.view_addr);
    let script_dir_for_node = script_dir.clone();
    let out_for_node = out.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("page.mjs")
            .arg(&base)
            .arg(&out_for_node)
            .env("CHROMIUM", chromium)
            .current_dir(script_dir_for_node)
            .output()
    })
    .await
    .unwrap()
    .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("page.mjs: {stdout}{stderr}");
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_default();

    expect_that!(
        output.status.success(),
        eq(true),
        "page.mjs failed: {stdout}{stderr}"
    );
    expect_that!(report["ok"], eq(&serde_json::json!(true)));
    expect_that!(report["rows"], eq(&serde_json::json!(4)));
    expect_that!(report["csvLines"], eq(&serde_json::json!(5)));
    expect_that!(report["chartBars"], eq(&serde_json::json!(4)));
    expect_that!(report["historyBounded"], eq(&serde_json::json!(100)));
    expect_that!(report["contrast"], eq(&serde_json::json!([])));
    expect_that!(report["focusWithoutOutline"], eq(&serde_json::json!([])));
    expect_that!(report["axe"], eq(&serde_json::json!([])));
    expect_that!(report["externalRequests"], eq(&serde_json::json!([])));
    for screenshot in [
        "page",
        "schema",
        "chart",
        "chart-line",
        "history",
        "keyboard",
        "error",
        "narrow",
        "narrow-chart",
    ] {
        expect_that!(
            out.join(format!("{screenshot}.png")).is_file(),
            eq(true),
            "{screenshot}.png"
        );
    }
}

/// This package's directory, read at run time (see `test_support::repo_root`
/// for why not `env!`).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("cargo test sets CARGO_MANIFEST_DIR")
        .into()
}
