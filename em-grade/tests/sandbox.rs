//! The sandbox contains what untrusted code does: each hostile program below is stopped,
//! reported with a reason, and leaves nothing behind.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use em_grade::GradeError;
use em_grade::sandbox::{Isolation, IsolationRequest, Limit, SandboxConfig, Status, run_python};

fn quick() -> SandboxConfig {
    SandboxConfig {
        wall_time: Duration::from_secs(3),
        cpu_time: Duration::from_secs(2),
        timeout_retries: 0,
        ..SandboxConfig::default()
    }
}

fn modes() -> Vec<SandboxConfig> {
    vec![
        quick(),
        SandboxConfig {
            isolation: IsolationRequest::AuditHookOnly,
            ..quick()
        },
    ]
}

#[test]
fn correct_code_passes_and_wrong_code_fails() {
    for config in modes() {
        let ok = run_python(
            "def f(x):\n    return x * 2\nassert f(3) == 6\nprint('ok')\n",
            &config,
        )
        .unwrap();
        assert!(ok.passed(), "{ok:?}");
        assert_eq!(ok.stdout, "ok\n");
        let bad = run_python("def f(x):\n    return x + 2\nassert f(3) == 6\n", &config).unwrap();
        assert_eq!(
            bad.status,
            Status::Failed {
                code: 1,
                reason: "AssertionError".into()
            },
            "{bad:?}"
        );
    }
}

#[test]
fn an_infinite_loop_is_killed_at_the_wall_clock() {
    for config in modes() {
        let config = SandboxConfig {
            wall_time: Duration::from_secs(1),
            cpu_time: Duration::from_secs(30),
            ..config
        };
        let r = run_python("import time\nwhile True:\n    time.sleep(0.01)\n", &config).unwrap();
        assert_eq!(
            r.status,
            Status::LimitExceeded {
                limit: Limit::WallTime
            },
            "{r:?}"
        );
        assert!(r.seconds < 3.0, "{}", r.seconds);
        assert_eq!((r.attempts, r.cpu_seconds), (1, None));
    }
}

#[test]
fn cpu_time_is_limited() {
    for config in modes() {
        let config = SandboxConfig {
            wall_time: Duration::from_secs(10),
            cpu_time: Duration::from_secs(1),
            ..config
        };
        let r = run_python("while True:\n    pass\n", &config).unwrap();
        assert_eq!(
            r.status,
            Status::LimitExceeded {
                limit: Limit::CpuTime
            },
            "{r:?}"
        );
        // Wall time only bounds it loosely: on a loaded machine (the canonical-solutions test
        // runs a busy loop per core) one CPU second can take several wall seconds.
        assert!(r.seconds < 9.0, "{}", r.seconds);
        assert_eq!(r.cpu_limit, 1.0);
    }
}

#[test]
fn a_memory_bomb_gets_a_memory_error() {
    for config in modes() {
        let r = run_python("x = bytearray(4 << 30)\n", &config).unwrap();
        assert_eq!(
            r.status,
            Status::LimitExceeded {
                limit: Limit::Memory
            },
            "{r:?}"
        );
    }
}

#[test]
fn huge_output_is_capped() {
    for config in modes() {
        let r = run_python(
            "import sys\nfor _ in range(200000):\n    sys.stdout.write('x' * 100)\n",
            &config,
        )
        .unwrap();
        assert!(r.output_truncated);
        assert_eq!(r.stdout.len(), config.output_limit);
    }
}

#[test]
fn writing_outside_the_run_directory_is_refused() {
    let target = std::env::temp_dir().join(format!("em-sandbox-escape-{}", std::process::id()));
    let code = format!(
        "open('inside.txt', 'w').write('fine')\nprint(open('inside.txt').read())\nopen({:?}, 'w').write('escaped')\n",
        target.display().to_string()
    );
    for config in modes() {
        let r = run_python(&code, &config).unwrap();
        assert!(
            matches!(&r.status, Status::Failed { reason, .. } if reason == "PermissionError" || reason == "OSError"),
            "{r:?}"
        );
        // The run's own directory is writable (relative paths included); only the escape failed.
        assert_eq!(r.stdout, "fine\n", "{r:?}");
        assert!(
            !target.exists(),
            "the file escaped the sandbox ({:?})",
            r.isolation
        );
    }
}

#[test]
fn connecting_to_a_loopback_port_fails() {
    // A listener on this machine that the sandboxed code tries to reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let code = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')\n"
    );
    for config in modes() {
        let r = run_python(&code, &config).unwrap();
        assert!(!r.passed(), "{r:?}");
        assert!(!r.stdout.contains("connected"));
        assert!(listener.accept().is_err(), "a connection reached the host");
    }
}

/// A bounded storm: the program tries to start 300 sleeping processes. Each run must end
/// within its wall time and leave no process behind.
#[test]
fn a_process_storm_is_contained() {
    // The children exec a `sleep` with a marker argument, so that the check below finds this
    // test's processes only.
    let code = "import os, time\nfor i in range(300):\n    if os.fork() == 0:\n        os.execv('/bin/sleep', ['/bin/sleep', '31.337'])\ntime.sleep(30)\n";
    for config in modes() {
        let config = SandboxConfig {
            wall_time: Duration::from_secs(2),
            ..config
        };
        let r = run_python(code, &config).unwrap();
        assert!(!r.passed());
        assert!(r.seconds < 5.0);
        std::thread::sleep(Duration::from_millis(300));
        let left = std::process::Command::new("pgrep")
            .args(["-f", "sleep 31.337"])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&left.stdout).to_string();
        assert!(
            pids.trim().is_empty(),
            "{:?} left processes: {pids}",
            r.isolation
        );
    }
}

#[test]
fn namespaces_are_used_when_available() {
    let r = run_python("print(1)\n", &quick()).unwrap();
    // As root on Linux (this machine and CI) the namespaces are available.
    if nix_is_root() {
        assert_eq!(r.isolation, Isolation::Namespaces);
    }
    let r = run_python(
        "print(1)\n",
        &SandboxConfig {
            isolation: IsolationRequest::AuditHookOnly,
            ..quick()
        },
    )
    .unwrap();
    assert_eq!(r.isolation, Isolation::AuditHook);
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

#[test]
fn a_big_file_hits_the_file_size_limit() {
    for config in modes() {
        let config = SandboxConfig {
            file_size_bytes: 1 << 20,
            ..config
        };
        let r = run_python(
            "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (4 << 20))\n",
            &config,
        )
        .unwrap();
        // Python ignores SIGXFSZ and sees EFBIG ("File too large"); either way it is the limit.
        assert_eq!(
            r.status,
            Status::LimitExceeded {
                limit: Limit::FileSize
            },
            "{r:?}"
        );
    }
}

/// A timeout is run again before it counts, and the result says which limit fired and how many
/// attempts were made; a run that passes is not repeated.
#[test]
fn a_timeout_is_retried_once_and_says_which_limit_fired() {
    for config in modes() {
        let config = SandboxConfig {
            wall_time: Duration::from_secs(1),
            cpu_time: Duration::from_secs(30),
            timeout_retries: 1,
            ..config
        };
        let r = run_python("import time\ntime.sleep(30)\n", &config).unwrap();
        assert_eq!(r.status.limit(), Some(Limit::WallTime), "{r:?}");
        assert_eq!(r.attempts, 2, "{r:?}");
        // A passing run is not retried, and reports its CPU seconds.
        let r = run_python("print(sum(range(10**6)))\n", &config).unwrap();
        assert!(r.passed());
        assert_eq!(r.attempts, 1);
        let cpu = r.cpu_seconds.unwrap();
        assert!(cpu > 0.0 && cpu < 5.0, "{cpu}");
    }
}

#[test]
fn unusable_limits_are_typed_errors() {
    let cases = [
        SandboxConfig {
            cpu_time: Duration::ZERO,
            ..quick()
        },
        SandboxConfig {
            wall_time: Duration::ZERO,
            ..quick()
        },
        SandboxConfig {
            reference_factor: f64::NAN,
            ..quick()
        },
        SandboxConfig {
            memory_bytes: 0,
            ..quick()
        },
    ];
    for config in cases {
        let err = run_python("print(1)\n", &config).unwrap_err();
        assert!(matches!(err, GradeError::InvalidConfig(_)), "{err}");
    }
}

/// The CPU budget follows the reference: the floor below it, `reference_factor ×` above, and
/// the wall-clock backstop in proportion; the config round-trips through JSON.
#[test]
fn budgets_scale_with_the_reference_time() {
    let base = SandboxConfig::default();
    assert_eq!(base.for_reference(None), base);
    assert_eq!(base.for_reference(Some(Duration::from_millis(30))), base);
    let scaled = base.for_reference(Some(Duration::from_secs(4)));
    assert_eq!(scaled.cpu_time, Duration::from_secs(16));
    assert_eq!(scaled.wall_time, Duration::from_secs(64));
    let json = serde_json::to_string(&scaled).unwrap();
    assert!(json.contains("\"cpu_time\":16.0"), "{json}");
    let back: SandboxConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, scaled);
    // Missing fields take their defaults.
    let partial: SandboxConfig = serde_json::from_str("{\"cpu_time\": 2.5}").unwrap();
    assert_eq!(partial.cpu_time, Duration::from_millis(2500));
    assert_eq!(partial.wall_time, base.wall_time);
}
