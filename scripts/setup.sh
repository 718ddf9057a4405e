#!/usr/bin/env bash
# Installs the system packages em's tests need, if they are missing:
#   - Mesa's software Vulkan driver (lavapipe) and the Vulkan loader, so the wgpu backend runs on
#     a machine without a GPU;
#   - a system Python 3 (/usr/bin/python3: em-grade's sandbox runs model-written code with it, as
#     an unprivileged user that cannot read interpreters under /root) and util-linux (`unshare`,
#     `setpriv`: the sandbox's namespaces; procps: `pgrep` in its process-storm test).
# Idempotent and quiet when everything is present. Needs root (or sudo) only to install.
set -euo pipefail

have_lavapipe() {
  # Captured before grep: in `ldconfig -p | grep -q` under pipefail, grep exits at its match and
  # ldconfig, still writing, dies of SIGPIPE, so the check failed now and then with the driver
  # installed (4 times in 200 on the dev VM, 2026-12-02) and took CI down with it.
  local libraries
  libraries=$(ldconfig -p 2>/dev/null) || return 1
  grep -q 'libvulkan\.so\.1' <<<"$libraries" &&
    ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1
}

have_python() {
  [ -x /usr/bin/python3 ] && command -v unshare >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1 &&
    command -v pgrep >/dev/null 2>&1
}

if have_lavapipe && have_python; then
  exit 0
fi

packages=(mesa-vulkan-drivers libvulkan1 python3 util-linux procps)
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get here; install Mesa's lavapipe Vulkan driver and the Vulkan loader" \
    "(Debian/Ubuntu: ${packages[*]}) with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "setup: installing ${packages[*]} needs root; run: apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
fi
echo "setup: installing ${packages[*]} (software Vulkan for the wgpu tests, Python for the sandbox)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
have_lavapipe || { echo "setup: lavapipe still not found after installing ${packages[*]}" >&2; exit 1; }
have_python || { echo "setup: /usr/bin/python3, unshare or setpriv still missing" >&2; exit 1; }
