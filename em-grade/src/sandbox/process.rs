//! One sandboxed run: the bootstrap that sets the limits, the command (namespaced or not), output
//! capture, the wall-clock kill and the mapping of how the process ended to a [`Status`].

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Isolation, IsolationRequest, Limit, RunResult, SandboxConfig, Status};
use crate::error::{GradeError, Result};

/// Sets the limits, installs the audit hook, records the CPU time used at exit (in
/// `cfg["cpu_file"]`), then runs `main.py` as `__main__`.
const BOOTSTRAP: &str = r#"
import json, os, resource, sys, atexit
cfg = json.loads(sys.argv[1])
work = os.path.realpath(cfg["work"])
for name, value in (("RLIMIT_AS", cfg["memory"]), ("RLIMIT_FSIZE", cfg["fsize"]),
                    ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", cfg["nproc"])):
    try:
        resource.setrlimit(getattr(resource, name), (value, value))
    except (ValueError, OSError):
        pass
resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"], cfg["cpu"] + 1))
_cpu_file = cfg["cpu_file"]
def _report_cpu(times=os.times, open=open, repr=repr):
    try:
        t = times()
        with open(_cpu_file, "w") as f:
            f.write(repr(t.user + t.system + t.children_user + t.children_system))
    except BaseException:
        pass
atexit.register(_report_cpu)
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

/// In the new mount namespace: the run's directory stays writable, every other mount but /proc
/// becomes read-only; then drop to nobody without capabilities. The `cd` matters: the working
/// directory inherited from the parent still points into the mount *under* the bind mount,
/// which the loop has just made read-only, so relative paths would not be writable.
const NAMESPACE_SCRIPT: &str = r#"set -e
mount --make-rprivate /
mount --bind "$EM_WORK" "$EM_WORK"
awk '{print $2}' /proc/self/mounts | sort -r | while read -r m; do
  case "$m" in "$EM_WORK"|/proc|/proc/*) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
cd "$EM_WORK"
set +e
setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
exit $?
"#;

/// The user the namespaced run uses.
const NOBODY: u32 = 65534;

/// Whether this process can create the namespaces (probed once: `unshare` as root).
fn namespaces_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let quiet = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        quiet(
            "unshare",
            &[
                "--net",
                "--pid",
                "--fork",
                "--mount",
                "--kill-child",
                "--",
                "true",
            ],
        ) && quiet("setpriv", &["--version"])
    })
}

/// One attempt of [`super::run_python`] (`config` already validated).
pub(super) fn run_once(code: &str, config: &SandboxConfig) -> Result<RunResult> {
    let dir = tempfile::Builder::new()
        .prefix("em-sandbox-")
        .tempdir()
        .map_err(GradeError::SandboxSetup)?;
    let work = dir.path().to_path_buf();
    let main = work.join("main.py");
    std::fs::write(&main, code).map_err(GradeError::SandboxSetup)?;
    let boot = work.join(".boot.py");
    std::fs::write(&boot, BOOTSTRAP).map_err(GradeError::SandboxSetup)?;
    let cpu_file = work.join(".cpu");
    let cpu_limit = config.cpu_time.as_secs_f64().ceil().max(1.0);
    let limits = serde_json::json!({
        "work": work,
        "memory": config.memory_bytes,
        "fsize": config.file_size_bytes,
        "nproc": config.max_processes,
        "cpu": cpu_limit as u64,
        "cpu_file": cpu_file,
    })
    .to_string();
    let isolation = match config.isolation {
        IsolationRequest::Auto if namespaces_available() => Isolation::Namespaces,
        _ => Isolation::AuditHook,
    };
    let mut command = match isolation {
        Isolation::Namespaces => {
            for path in [&work, &main, &boot] {
                std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
                    .map_err(GradeError::SandboxSetup)?;
            }
            let mut c = Command::new("unshare");
            c.args(["--net", "--pid", "--fork", "--mount", "--kill-child", "--"])
                .arg("sh")
                .arg("-c")
                .arg(NAMESPACE_SCRIPT)
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
        .map_err(|source| GradeError::Spawn { program, source })?;
    let stdout = capture(child.stdout.take(), config.output_limit);
    let stderr = capture(child.stderr.take(), config.output_limit);
    let group = rustix::process::Pid::from_child(&child);
    let mut killed_at_wall = false;
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= config.wall_time => {
                killed_at_wall = true;
                kill_group(group);
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    // Whatever is left of the group (a child that outlived its parent) goes too.
    kill_group(group);
    let seconds = started.elapsed().as_secs_f64();
    let (out, out_cut) = stdout.join().unwrap_or_default();
    let (err, err_cut) = stderr.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err).into_owned();
    let cpu_seconds = std::fs::read_to_string(&cpu_file)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0);
    let status = if killed_at_wall {
        Status::LimitExceeded {
            limit: Limit::WallTime,
        }
    } else {
        status_of(exit, isolation, &stderr, seconds >= cpu_limit)
    };
    Ok(RunResult {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr,
        output_truncated: out_cut || err_cut,
        seconds,
        cpu_seconds,
        attempts: 1,
        cpu_limit,
        wall_limit: config.wall_time.as_secs_f64(),
        isolation,
    })
}

/// How a process that exited by itself (or by a signal) ended. `past_cpu_limit`: its wall time
/// exceeded the CPU limit, so a SIGKILL can be `RLIMIT_CPU`'s hard limit.
fn status_of(
    exit: Option<std::process::ExitStatus>,
    isolation: Isolation,
    stderr: &str,
    past_cpu_limit: bool,
) -> Status {
    use std::os::unix::process::ExitStatusExt;
    const SIGKILL: i32 = 9;
    const SIGXCPU: i32 = 24;
    const SIGXFSZ: i32 = 25;
    let signaled = |signal: i32| match signal {
        SIGXCPU => Status::LimitExceeded {
            limit: Limit::CpuTime,
        },
        SIGKILL if past_cpu_limit => Status::LimitExceeded {
            limit: Limit::CpuTime,
        },
        SIGXFSZ => Status::LimitExceeded {
            limit: Limit::FileSize,
        },
        signal => Status::Signaled { signal },
    };
    let Some(exit) = exit else {
        return Status::Signaled { signal: 0 };
    };
    if exit.success() {
        return Status::Passed;
    }
    match (exit.code(), exit.signal()) {
        // unshare reports a child killed by a signal as 128 + signal.
        (Some(code), _) if code > 128 && isolation == Isolation::Namespaces => signaled(code - 128),
        (Some(code), _) => {
            let reason = last_error_line(stderr);
            if reason == "MemoryError" {
                Status::LimitExceeded {
                    limit: Limit::Memory,
                }
            } else if reason == "OSError" && last_line(stderr).contains("[Errno 27]") {
                // Python ignores SIGXFSZ, so RLIMIT_FSIZE surfaces as EFBIG ("File too large").
                Status::LimitExceeded {
                    limit: Limit::FileSize,
                }
            } else {
                Status::Failed { code, reason }
            }
        }
        (None, Some(signal)) => signaled(signal),
        (None, None) => Status::Signaled { signal: 0 },
    }
}

/// Reads a pipe to its end on a thread, keeping the first `limit` bytes.
fn capture<R: Read + Send + 'static>(
    pipe: Option<R>,
    limit: usize,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
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
}

/// SIGKILL to the run's process group (`killpg(2)`); a group that is already gone is fine.
fn kill_group(group: rustix::process::Pid) {
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
}

/// The last non-blank line of stderr.
fn last_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
}

/// The exception name of a Python traceback's last line (`AssertionError`, `MemoryError`, ...).
fn last_error_line(stderr: &str) -> String {
    let line = last_line(stderr);
    line.split(':').next().unwrap_or(line).trim().to_string()
}
