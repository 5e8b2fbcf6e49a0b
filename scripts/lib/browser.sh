# Headless Chromium and its chromedriver for the dashboard's browser tests: Debian's
# packages, installed with apt-get when missing (as root), as on a fresh CI machine.

browser_install_if_missing() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium / chromedriver not found: installing them with apt-get" >&2
    apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || {
    echo "chromium and chromedriver are required for the dashboard tests and could not be installed" >&2
    return 1
  }
}
