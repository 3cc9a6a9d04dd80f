#!/usr/bin/env bash
# Starts PostgreSQL and RabbitMQ when they are not answering. Waits (bounded) until they do.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do port_open "$2" && return 0; sleep 0.5; done
  echo "ensure-services: $1 did not come up on port $2 within $3 s; see its log" >&2
  return 1
}

if ! port_open 5432; then
  echo "ensure-services: starting PostgreSQL..."
  cluster_version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [[ -z $cluster_version ]]; then
    echo "ensure-services: no PostgreSQL cluster found (is the postgresql package installed?)" >&2
    exit 1
  fi
  pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start || true
  wait_port PostgreSQL 5432 60
  # Trust auth on loopback for the local stack and tests, as on the development machines.
  hba="/etc/postgresql/$cluster_version/main/pg_hba.conf"
  if [[ -w $hba ]] && ! grep -q "plantnotify-trust" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # plantnotify-trust\nhost all all ::1/128 trust # plantnotify-trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main reload || true
  fi
fi

if ! port_open 5672; then
  echo "ensure-services: starting RabbitMQ (this takes ~10 s)..."
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port RabbitMQ 5672 90
fi
