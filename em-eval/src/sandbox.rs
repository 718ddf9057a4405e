//! Running untrusted Python (model-written code and its tests) with limits
//! (`../shared/docs/method.md` §4).
//!
//! Every run gets a fresh temporary directory (removed afterwards) and its own process group,
//! stdin closed, a cleared environment, and:
//! - **limits** set by a Python bootstrap before the user code runs: address space
//!   (`RLIMIT_AS`), CPU seconds (`RLIMIT_CPU`), file size (`RLIMIT_FSIZE`), processes
//!   (`RLIMIT_NPROC`, effective for the unprivileged user below), no core dumps; a wall-clock
//!   deadline after which the whole process group is killed; stdout and stderr capped (the
//!   rest is drained and dropped);
//! - **isolation** ([`Isolation::Namespaces`], used when the process may create namespaces,
//!   e.g. as root): `unshare` puts the run in new network (no interfaces, so no network at
//!   all, loopback included), PID (every process of the run dies with it) and mount
//!   namespaces; in the mount namespace every mount but the run's directory and `/proc` is
//!   remounted read-only, and the code runs as `nobody` with no capabilities (`setpriv`), so it
//!   can write nowhere else and cannot undo the mounts;
//! - otherwise ([`Isolation::AuditHook`]) a Python audit hook refuses sockets, writes outside
//!   the run's directory and more than `max_processes` process creations. This is weaker (C
//!   extensions such as `ctypes` can bypass audit hooks) and [`RunResult::isolation`] says
//!   which one was used. The audit hook is installed in both modes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Limits of one run. Defaults: 6 s wall, 5 s CPU, 1 GiB address space, 16 MiB files,
/// 64 processes, 64 KiB of stdout and of stderr, isolation chosen automatically.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// The interpreter (default: `/usr/bin/python3` if present, readable by `nobody`, else
    /// `python3` from `PATH`).
    pub python: PathBuf,
    /// Wall-clock limit; the process group is killed when it passes.
    pub wall_time: Duration,
    /// CPU-time limit (`RLIMIT_CPU`, whole seconds, at least 1).
    pub cpu_time: Duration,
    /// Address-space limit in bytes (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Largest file the code may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Processes the code may create (`RLIMIT_NPROC` for the sandbox user, and the audit hook).
    pub max_processes: u32,
    /// Bytes of stdout and of stderr kept.
    pub output_limit: usize,
    /// How to isolate.
    pub isolation: IsolationRequest,
}

/// Which isolation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationRequest {
    /// Namespaces when available, else the audit hook.
    Auto,
    /// The audit hook only (e.g. to compare, or where namespaces are unwanted).
    AuditHookOnly,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let system = Path::new("/usr/bin/python3");
        Self {
            python: if system.exists() {
                system.to_path_buf()
            } else {
                PathBuf::from("python3")
            },
            wall_time: Duration::from_secs(6),
            cpu_time: Duration::from_secs(5),
            memory_bytes: 1 << 30,
            file_size_bytes: 16 << 20,
            max_processes: 64,
            output_limit: 64 << 10,
            isolation: IsolationRequest::Auto,
        }
    }
}

/// How a run was isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Network, PID and mount namespaces, read-only filesystem, unprivileged user (and the
    /// audit hook).
    Namespaces,
    /// The Python audit hook only (no namespaces could be created here).
    AuditHook,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Status {
    /// Exit code 0.
    Passed,
    /// A non-zero exit code (failed assertion, exception, ...).
    Failed {
        /// The exit code.
        code: i32,
        /// The exception's last line on stderr (e.g. `AssertionError`, `MemoryError`).
        reason: String,
    },
    /// Killed at the wall-clock limit.
    Timeout,
    /// Ended by a signal (CPU limit: SIGXCPU/SIGKILL; file size: SIGXFSZ; ...).
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    /// How it ended.
    pub status: Status,
    /// Captured stdout (at most `output_limit` bytes, lossily UTF-8).
    pub stdout: String,
    /// Captured stderr (likewise).
    pub stderr: String,
    /// Whether stdout or stderr went over the limit.
    pub output_truncated: bool,
    /// Wall time.
    pub seconds: f64,
    /// The isolation that was in force.
    pub isolation: Isolation,
}

impl RunResult {
    /// Whether the code exited with status 0.
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }
}

/// Errors that prevent a run from starting at all (the code's own failures are a [`Status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Creating the run's directory or files failed.
    #[error("sandbox setup failed: {0}")]
    Setup(#[source] std::io::Error),
    /// The interpreter (or `unshare`) could not be started.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// What was started.
        program: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A limit that is zero or otherwise unusable.
    #[error("invalid sandbox config: {0}")]
    InvalidConfig(String),
}

const BOOTSTRAP: &str = r#"
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
work = os.path.realpath(cfg["work"])
for name, value in (("RLIMIT_AS", cfg["memory"]), ("RLIMIT_FSIZE", cfg["fsize"]),
                    ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", cfg["nproc"])):
    try:
        resource.setrlimit(getattr(resource, name), (value, value))
    except (ValueError, OSError):
        pass
resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"], cfg["cpu"] + 1))
spawned = [0]
def _guard(event, args):
    if event.startswith("socket.") and event != "socket.__new__":
        raise PermissionError("sandbox: network access is disabled (" + event + ")")
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            path = os.path.realpath(os.fsdecode(args[0]))
            if path != work and not path.startswith(work + os.sep) and path != "/dev/null":
                raise PermissionError("sandbox: writing outside the run directory: " + path)
    if event in ("os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn",
                 "os.system", "subprocess.Popen"):
        spawned[0] += 1
        if spawned[0] > cfg["nproc"]:
            raise PermissionError("sandbox: too many processes")
sys.addaudithook(_guard)
del json, resource
sys.argv = ["main.py"]
sys.path.insert(0, work)
import runpy
runpy.run_path(os.path.join(work, "main.py"), run_name="__main__")
"#;

/// Whether this process can create the namespaces (probed once: `unshare` as root).
fn namespaces_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("unshare")
            .args([
                "--net",
                "--pid",
                "--fork",
                "--mount",
                "--kill-child",
                "--",
                "true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("setpriv")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// The user the namespaced run uses.
const NOBODY: u32 = 65534;

/// Runs `code` (a whole Python program) under `config`; see the module docs.
///
/// # Errors
/// [`SandboxError`] when the run cannot start; everything the code does is in the
/// [`RunResult`].
pub fn run_python(code: &str, config: &SandboxConfig) -> Result<RunResult, SandboxError> {
    if config.wall_time.is_zero() || config.cpu_time.is_zero() || config.memory_bytes == 0 {
        return Err(SandboxError::InvalidConfig(
            "wall_time, cpu_time and memory_bytes must be positive".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("em-sandbox-")
        .tempdir()
        .map_err(SandboxError::Setup)?;
    let work = dir.path().to_path_buf();
    std::fs::write(work.join("main.py"), code).map_err(SandboxError::Setup)?;
    let boot = work.join(".boot.py");
    std::fs::write(&boot, BOOTSTRAP).map_err(SandboxError::Setup)?;
    let limits = serde_json::json!({
        "work": work,
        "memory": config.memory_bytes,
        "fsize": config.file_size_bytes,
        "nproc": config.max_processes,
        "cpu": config.cpu_time.as_secs().max(1),
    })
    .to_string();
    let isolation = match config.isolation {
        IsolationRequest::Auto if namespaces_available() => Isolation::Namespaces,
        _ => Isolation::AuditHook,
    };
    let mut command = match isolation {
        Isolation::Namespaces => {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{NOBODY}:{NOBODY}"))
                .arg(&work)
                .status()
                .map_err(SandboxError::Setup)?;
            if !status.success() {
                return Err(SandboxError::Setup(std::io::Error::other("chown failed")));
            }
            // In the new mount namespace: the run's directory stays writable, every other
            // mount but /proc becomes read-only; then drop to nobody without capabilities.
            let script = r#"set -e
mount --make-rprivate /
mount --bind "$EM_WORK" "$EM_WORK"
awk '{print $2}' /proc/self/mounts | sort -r | while read -r m; do
  case "$m" in "$EM_WORK"|/proc|/proc/*) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
set +e
setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
exit $?
"#;
            let mut c = Command::new("unshare");
            c.args(["--net", "--pid", "--fork", "--mount", "--kill-child", "--"])
                .arg("sh")
                .arg("-c")
                .arg(script)
                .arg("sh")
                .arg(&config.python);
            c
        }
        Isolation::AuditHook => Command::new(&config.python),
    };
    command
        .arg("-I")
        .arg(&boot)
        .arg(&limits)
        .current_dir(&work)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &work)
        .env("EM_WORK", &work)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let started = Instant::now();
    let program = match isolation {
        Isolation::Namespaces => "unshare".to_string(),
        Isolation::AuditHook => config.python.display().to_string(),
    };
    let mut child = command
        .spawn()
        .map_err(|source| SandboxError::Spawn { program, source })?;
    let limit = config.output_limit;
    let capture = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || -> (Vec<u8>, bool) {
            let Some(mut pipe) = pipe else {
                return (Vec::new(), false);
            };
            let mut kept = Vec::new();
            let mut truncated = false;
            let mut buffer = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
                truncated |= n > room;
            }
            (kept, truncated)
        })
    };
    let stdout = capture(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = capture(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let pgid = child.id();
    let mut timed_out = false;
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= config.wall_time => {
                timed_out = true;
                kill_group(pgid);
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    // Whatever is left of the group (a child that outlived its parent) goes too.
    kill_group(pgid);
    let seconds = started.elapsed().as_secs_f64();
    let (out, out_cut) = stdout.join().unwrap_or_default();
    let (err, err_cut) = stderr.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err).into_owned();
    let status = if timed_out {
        Status::Timeout
    } else {
        use std::os::unix::process::ExitStatusExt;
        match exit {
            Some(s) if s.success() => Status::Passed,
            Some(s) => match (s.code(), s.signal()) {
                // unshare reports a child killed by a signal as 128 + signal.
                (Some(code), _) if code > 128 && isolation == Isolation::Namespaces => {
                    Status::Signaled { signal: code - 128 }
                }
                (Some(code), _) => Status::Failed {
                    code,
                    reason: last_error_line(&stderr),
                },
                (None, Some(signal)) => Status::Signaled { signal },
                (None, None) => Status::Signaled { signal: 0 },
            },
            None => Status::Signaled { signal: 0 },
        }
    };
    Ok(RunResult {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr,
        output_truncated: out_cut || err_cut,
        seconds,
        isolation,
    })
}

/// SIGKILL to a process group, through `kill(1)` (no unsafe code here).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The exception name of a Python traceback's last line (`AssertionError`, `MemoryError`, ...).
fn last_error_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.split(':').next().unwrap_or(l).trim().to_string())
        .unwrap_or_default()
}
