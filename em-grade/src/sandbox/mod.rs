//! Running untrusted Python (model-written code and its tests) with limits
//! (`docs/method.md` §4).
//!
//! Every run gets a fresh temporary directory (removed afterwards) and its own process group,
//! stdin closed, a cleared environment, and:
//! - **limits** set by a Python bootstrap before the user code runs: address space
//!   (`RLIMIT_AS`), CPU seconds (`RLIMIT_CPU`), file size (`RLIMIT_FSIZE`), processes
//!   (`RLIMIT_NPROC`, effective for the unprivileged user below), no core dumps; a wall-clock
//!   deadline after which the whole process group is killed (`killpg(2)`); stdout and stderr
//!   capped (the rest is drained and dropped);
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
//!
//! ## Verdicts that do not depend on the machine's load
//! The limit that decides is **CPU time**, which a busy machine does not inflate: a correct
//! solution gets the same CPU seconds whether the other cores are idle or saturated. Its budget
//! is per problem, scaled from the reference solution's own measured CPU time the way EvalPlus
//! does it ([`SandboxConfig::for_reference`]: `max(cpu_time, reference_factor × reference)`),
//! so a problem whose canonical solution needs 4 s of CPU is not judged by a 5 s limit. The
//! wall clock is only a generous backstop (for code that sleeps or blocks), scaled with the CPU
//! budget. A run that hits either time limit is run again ([`SandboxConfig::timeout_retries`],
//! default once) before the timeout counts, and every [`RunResult`] says which limit fired
//! ([`Status::LimitExceeded`]), how many attempts it took and the CPU seconds the code used.

mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{GradeError, Result};

/// Limits of one run. Defaults: 5 s CPU (the floor of the per-problem budget), ×4 the
/// reference solution's CPU time above that, a 20 s wall-clock backstop (scaled with the CPU
/// budget), one re-run of a timeout, 1 GiB address space, 16 MiB files, 64 processes, 64 KiB of
/// stdout and of stderr, isolation chosen automatically.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// The interpreter (default: `/usr/bin/python3` if present, readable by `nobody`, else
    /// `python3` from `PATH`).
    pub python: PathBuf,
    /// Wall-clock backstop; the process group is killed when it passes. Scaled by
    /// [`SandboxConfig::for_reference`] in proportion to the CPU budget.
    #[serde(with = "seconds")]
    pub wall_time: Duration,
    /// CPU-time limit (`RLIMIT_CPU`, rounded up to whole seconds); the floor of a problem's
    /// budget in [`SandboxConfig::for_reference`].
    #[serde(with = "seconds")]
    pub cpu_time: Duration,
    /// A problem's CPU budget is at least this many times its reference solution's CPU time
    /// (EvalPlus's `gt_time_limit_factor`).
    pub reference_factor: f64,
    /// How many times a run that hit the CPU or wall-clock limit is run again before the
    /// timeout counts.
    pub timeout_retries: u32,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
            wall_time: Duration::from_secs(20),
            cpu_time: Duration::from_secs(5),
            reference_factor: 4.0,
            timeout_retries: 1,
            memory_bytes: 1 << 30,
            file_size_bytes: 16 << 20,
            max_processes: 64,
            output_limit: 64 << 10,
            isolation: IsolationRequest::Auto,
        }
    }
}

impl SandboxConfig {
    /// The limits for a problem whose reference solution used `reference` CPU time (measured
    /// in this sandbox; `None`: unknown): CPU budget `max(cpu_time, reference_factor ×
    /// reference)`, and the wall-clock backstop scaled by the same ratio.
    pub fn for_reference(&self, reference: Option<Duration>) -> SandboxConfig {
        let floor = self.cpu_time.as_secs_f64();
        let scaled = reference.map_or(0.0, |r| r.as_secs_f64() * self.reference_factor);
        if scaled.is_nan() || scaled <= floor || floor <= 0.0 {
            return self.clone();
        }
        let ratio = scaled / floor;
        SandboxConfig {
            cpu_time: Duration::from_secs_f64(scaled),
            wall_time: Duration::from_secs_f64(self.wall_time.as_secs_f64() * ratio),
            ..self.clone()
        }
    }

    /// Checks that every limit is usable.
    ///
    /// # Errors
    /// [`GradeError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(GradeError::InvalidConfig(format!("{field} {why}")));
        if self.wall_time.is_zero() {
            return bad("wall_time", "must be positive");
        }
        if self.cpu_time.is_zero() {
            return bad("cpu_time", "must be positive");
        }
        if self.memory_bytes == 0 {
            return bad("memory_bytes", "must be positive");
        }
        if !self.reference_factor.is_finite() || self.reference_factor <= 0.0 {
            return bad("reference_factor", "must be finite and positive");
        }
        Ok(())
    }
}

/// Serde for a [`Duration`] as fractional seconds.
mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = <f64 as serde::Deserialize>::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
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

/// A limit that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The wall-clock backstop: the process group was killed.
    WallTime,
    /// `RLIMIT_CPU` (SIGXCPU, or SIGKILL at the hard limit).
    CpuTime,
    /// `RLIMIT_AS`: Python raised `MemoryError`.
    Memory,
    /// `RLIMIT_FSIZE` (SIGXFSZ).
    FileSize,
}

impl Limit {
    /// Whether the limit is a time limit (a run that hits one is retried).
    pub fn is_time(self) -> bool {
        matches!(self, Limit::WallTime | Limit::CpuTime)
    }

    /// `wall_time`, `cpu_time`, `memory`, `file_size`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::WallTime => "wall_time",
            Limit::CpuTime => "cpu_time",
            Limit::Memory => "memory",
            Limit::FileSize => "file_size",
        }
    }
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
        /// The exception's name from stderr's last line (e.g. `AssertionError`).
        reason: String,
    },
    /// A sandbox limit stopped it.
    LimitExceeded {
        /// Which one.
        limit: Limit,
    },
    /// Ended by another signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl Status {
    /// The limit that fired, if one did.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Status::LimitExceeded { limit } => Some(*limit),
            _ => None,
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    /// How it ended (the last attempt).
    pub status: Status,
    /// Captured stdout (at most `output_limit` bytes, lossily UTF-8).
    pub stdout: String,
    /// Captured stderr (likewise).
    pub stderr: String,
    /// Whether stdout or stderr went over the limit.
    pub output_truncated: bool,
    /// Wall time of the last attempt, seconds.
    pub seconds: f64,
    /// CPU seconds the code used (its own and its waited-for children's), when it exited by
    /// itself; `None` when it was killed.
    pub cpu_seconds: Option<f64>,
    /// Attempts made: 1, or more when a timeout was retried.
    pub attempts: u32,
    /// The CPU limit in force, seconds.
    pub cpu_limit: f64,
    /// The wall-clock backstop in force, seconds.
    pub wall_limit: f64,
    /// The isolation that was in force.
    pub isolation: Isolation,
}

impl RunResult {
    /// Whether the code exited with status 0.
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }
}

/// Runs `code` (a whole Python program) under `config`; see the module docs. A run stopped by a
/// time limit is run again up to [`SandboxConfig::timeout_retries`] times; the result is the
/// last attempt's.
///
/// # Errors
/// [`GradeError::InvalidConfig`] for an unusable limit, [`GradeError::SandboxSetup`] or
/// [`GradeError::Spawn`] when the run cannot start; everything the code does is in the
/// [`RunResult`].
pub fn run_python(code: &str, config: &SandboxConfig) -> Result<RunResult> {
    config.validate()?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut result = process::run_once(code, config)?;
        result.attempts = attempts;
        let timed_out = result.status.limit().is_some_and(Limit::is_time);
        if !timed_out || attempts > config.timeout_retries {
            return Ok(result);
        }
    }
}
