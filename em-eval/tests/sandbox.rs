//! The sandbox contains what untrusted code does: each hostile program below is stopped,
//! reported with a reason, and leaves nothing behind.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use em_eval::sandbox::{Isolation, IsolationRequest, SandboxConfig, Status, run_python};

fn quick() -> SandboxConfig {
    SandboxConfig {
        wall_time: Duration::from_secs(3),
        cpu_time: Duration::from_secs(2),
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
        assert_eq!(r.status, Status::Timeout, "{r:?}");
        assert!(r.seconds < 3.0, "{}", r.seconds);
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
        assert!(
            matches!(r.status, Status::Signaled { signal: 24 | 9 }),
            "{r:?}"
        );
        assert!(r.seconds < 5.0);
    }
}

#[test]
fn a_memory_bomb_gets_a_memory_error() {
    for config in modes() {
        let r = run_python("x = bytearray(4 << 30)\n", &config).unwrap();
        assert_eq!(
            r.status,
            Status::Failed {
                code: 1,
                reason: "MemoryError".into()
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
        "open('inside.txt', 'w').write('fine')\nopen({:?}, 'w').write('escaped')\n",
        target.display().to_string()
    );
    for config in modes() {
        let r = run_python(&code, &config).unwrap();
        assert!(
            matches!(&r.status, Status::Failed { reason, .. } if reason == "PermissionError" || reason == "OSError"),
            "{r:?}"
        );
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
