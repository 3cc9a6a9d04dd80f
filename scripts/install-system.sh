#!/usr/bin/env bash
# Installs the Debian packages plantnotify needs, only those that are missing.
# Idempotent and quiet when everything is there; needs root (or sudo) to install.
set -euo pipefail

PACKAGES=(
  mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev   # broker, CLI tools, plugin headers
  libjwt-dev libjansson-dev libssl-dev pkg-config build-essential  # plugin build
  postgresql rabbitmq-server                                   # local stack services
  nodejs npm                                                   # web app bundle (mqtt.js)
  chromium                                                     # browser tests
  clang libclang-rt-14-dev valgrind                            # fuzzing + sanitizers
  docker.io debootstrap                     # make test-containers: engine, local base images
)
# Optional tools: installed when available, never fatal (validation of compose/alert rules).
OPTIONAL=(docker-compose prometheus)

missing=()
for p in "${PACKAGES[@]}" "${OPTIONAL[@]}"; do
  # nodejs may come from another repository; a working node+npm is enough.
  if [[ $p == nodejs || $p == npm ]] && command -v node >/dev/null && command -v npm >/dev/null; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-system: need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-system: installing ${missing[*]} (apt-get, a few minutes the first time)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
required=()
for p in "${missing[@]}"; do
  if [[ " ${OPTIONAL[*]} " == *" $p "* ]]; then
    $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
      || echo "install-system: optional package $p not available; its checks will say so" >&2
  else
    required+=("$p")
  fi
done
if [[ ${#required[@]} -gt 0 ]]; then
  $SUDO apt-get install -y -qq --no-install-recommends "${required[@]}" >/dev/null
fi
# Debian starts services on install where it can; we start them ourselves (ensure-services.sh).
echo "install-system: done"
