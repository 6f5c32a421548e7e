#!/usr/bin/env bash
# Installs the Debian packages that `make test` needs and pip cannot provide; a no-op when all are there.
#   prometheus       -> promtool (check metrics/rules/config, test rules) and the Prometheus server that
#                       tests/integration/test_observability.py scrapes the worker with
#   docker-compose   -> `docker-compose config`, the compose file check of tests/deploy (no daemon needed)
#   default-jre-headless, maven -> the local Kafka broker of the integration tests (streams/tools/localkafka.py)
#   python3-venv     -> scripts/bootstrap.sh creates .venv with it
#   postgresql       -> the PostgreSQL server the archive's tests start and stop themselves (tests/postgres.py
#                       runs initdb and pg_ctl from /usr/lib/postgresql/*/bin; the package's own cluster
#                       is never started)
# Debian 12 (bookworm) or later, as root (or with sudo). Services are never started by the install: the
# Debian prometheus package would otherwise launch a server on :9090 on machines that honour invoke-rc.d.
set -euo pipefail

missing=()
need() { # need COMMAND PACKAGE: queue PACKAGE when COMMAND is absent
  command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}
need promtool prometheus
need prometheus prometheus
need docker-compose docker-compose
need java default-jre-headless
need mvn maven
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# Debian keeps the server binaries off PATH, one directory per major version.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
# unique, order kept
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "system-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "system-deps: installing ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  # 101 = "action forbidden": package scripts install services without starting them.
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  added_policy=1
fi
cleanup() {
  if [ "$added_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

for cmd in promtool prometheus docker-compose java mvn; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "system-deps: $cmd still missing after install" >&2; exit 1; }
done
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || { echo "system-deps: PostgreSQL's initdb still missing after install" >&2; exit 1; }
