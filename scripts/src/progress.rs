//! Progress output for long steps: every step says what it is doing and,
//! when it ends, how long it took.

use std::time::Instant;

pub struct Step {
    what: String,
    started: Instant,
}

/// Announce a step; `done()` reports its duration.
pub fn step(what: impl Into<String>) -> Step {
    let what = what.into();
    eprintln!("==> {what}");
    Step {
        what,
        started: Instant::now(),
    }
}

impl Step {
    pub fn done(self) {
        eprintln!(
            "    {} ({:.1}s)",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// A line of detail under the current step.
pub fn info(line: impl AsRef<str>) {
    eprintln!("    {}", line.as_ref());
}
