//! Pod processes: starting them so they cannot outlive the runner, stopping
//! their process groups, and clearing away what a dead runner left behind.
//!
//! Two layers keep children from outliving the runner:
//! - every child gets `PR_SET_PDEATHSIG = SIGKILL`. That signal fires when the
//!   *thread* that forked the child exits, not the process, and tokio's
//!   blocking threads come and go; so all forks happen on one dedicated
//!   thread that lives as long as the runner ([`Spawner`]).
//! - the death signal reaches only the direct child, not what it forked. Each
//!   pod process therefore leads its own process group, recorded in a file
//!   under the state directory while it runs; a runner starting up kills any
//!   recorded group whose members still sit in the pod network namespace.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::Error;
use crate::cluster::network;

type Request = (Command, oneshot::Sender<io::Result<Child>>);

/// Forks every pod process from one long-lived thread (see the module doc).
pub struct Spawner {
    requests: std::sync::mpsc::Sender<Request>,
}

impl Spawner {
    /// Start the spawning thread; it ends when the `Spawner` is dropped.
    pub fn start(runtime: tokio::runtime::Handle) -> Result<Self, Error> {
        let (requests, receiver) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("pod-spawner".into())
            .spawn(move || {
                // tokio's child handling needs a runtime context on the
                // spawning thread; this thread is not one of the runtime's.
                let _runtime = runtime.enter();
                while let Ok((mut command, reply)) = receiver.recv() {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(|source| Error::Io {
                what: "starting the pod-spawner thread".into(),
                source,
            })?;
        Ok(Self { requests })
    }

    /// Spawn `binary args…` inside the pod network namespace, in its own
    /// process group, with exactly `env`, output appended to `log`.
    pub async fn spawn(&self, spec: &Spec<'_>) -> Result<Child, Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log)
            .map_err(|source| Error::Io {
                what: format!("opening {}", spec.log.display()),
                source,
            })?;
        let stderr = log.try_clone().map_err(|source| Error::Io {
            what: format!("opening {}", spec.log.display()),
            source,
        })?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", network::NETNS])
            .arg(spec.binary)
            .args(spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(spec.working_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(0)
            // The runner stops its pods itself (SIGTERM, grace, SIGKILL);
            // dropping a handle must not kill behind its back.
            .kill_on_drop(false);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid, raise).
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                // The runner may have died between fork and prctl, in which
                // case no death signal will ever come.
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    let _ = nix::sys::signal::raise(Signal::SIGKILL);
                }
                Ok(())
            });
        }
        let (reply, response) = oneshot::channel();
        let spawn_error = |e: io::Error| Error::Container {
            reason: "CreateContainerError",
            message: format!("starting {}: {e}", spec.binary.display()),
        };
        self.requests
            .send((command, reply))
            .map_err(|_| spawn_error(io::Error::other("the pod-spawner thread is gone")))?;
        response
            .await
            .map_err(|_| spawn_error(io::Error::other("the pod-spawner thread is gone")))?
            .map_err(spawn_error)
    }
}

pub struct Spec<'a> {
    pub binary: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub working_dir: &'a Path,
    pub log: &'a Path,
}

/// Signal a whole process group; a group that is already gone is fine.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, %signal, error = %e, "signalling process group"),
    }
}

/// SIGTERM the child's group, SIGKILL it after `grace`, and reap the child.
/// Returns its exit status, if it could be reaped.
pub async fn stop(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let pgid = child.id()?;
    signal_group(pgid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            signal_group(pgid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    // The leader is gone; whatever it forked into its group goes with it.
    signal_group(pgid, Signal::SIGKILL);
    status
}

/// Files naming the process groups of running pods (see the module doc).
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(state_dir: &Path) -> Result<Self, Error> {
        let dir = state_dir.join("process-groups");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        Ok(Self { dir })
    }

    pub fn add(&self, pgid: u32, pod: &str) {
        if let Err(e) = std::fs::write(self.dir.join(pgid.to_string()), pod) {
            tracing::warn!(pgid, pod, error = %e, "recording process group");
        }
    }

    pub fn remove(&self, pgid: u32) {
        let _ = std::fs::remove_file(self.dir.join(pgid.to_string()));
    }

    /// Kill every recorded group left by an earlier runner. A group counts
    /// only while its members are in the pod network namespace, so a reused
    /// process-group id of some unrelated program is never touched.
    pub fn kill_leftovers(&self) -> Result<usize, Error> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| Error::Io {
            what: format!("reading {}", self.dir.display()),
            source,
        })?;
        let netns = netns_inode();
        let mut killed = 0;
        for entry in entries.flatten() {
            let Some(pgid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let pod = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let members = netns
                .map(|ns| group_members_in_netns(pgid, ns))
                .unwrap_or_default();
            if !members.is_empty() {
                tracing::info!(
                    pgid,
                    pod,
                    ?members,
                    "killing a pod process left by an earlier pod runner"
                );
                signal_group(pgid, Signal::SIGKILL);
                killed += 1;
            }
            self.remove(pgid);
        }
        Ok(killed)
    }
}

/// The inode identifying the pod network namespace, if it exists.
fn netns_inode() -> Option<u64> {
    std::fs::metadata(Path::new("/run/netns").join(network::NETNS))
        .ok()
        .map(|m| m.ino())
}

fn group_members_in_netns(pgid: u32, netns: u64) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_group_of(*pid) == Some(pgid))
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == netns)
        })
        .collect()
}

/// Field 5 of `/proc/<pid>/stat`, read after the parenthesised command name
/// (which may itself contain spaces and parentheses).
fn process_group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_pgrp(&stat)
}

fn parse_pgrp(stat: &str) -> Option<u32> {
    let rest = stat.rsplit_once(')')?.1;
    // state, ppid, pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_process_group_past_odd_command_names() {
        assert_eq!(parse_pgrp("42 (a) b (c)) S 1 4242 4242 0"), Some(4242));
        assert_eq!(parse_pgrp("garbage"), None);
    }
}
