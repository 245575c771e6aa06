#!/bin/sh
# One data node of the Sentinel group. It starts as the replica of the primary the Sentinels name; only when no
# Sentinel answers and this is the first pod (a fresh group) does it start as the primary. A restarted old primary
# therefore rejoins as a replica instead of splitting the group in two.
#   SENTINELS  "host:port ..." to ask (the Sentinel Service)    SELF   this node's address, as others reach it
#   FIRST      the first pod's address (FIRST_PORT: its port)    VALKEY_PORT (6379), VALKEY_DATA (/data)
#   VALKEY_PASSWORD (optional)                                   WAIT_SECONDS: how long a non-first pod waits
set -eu
: "${VALKEY_PORT:=6379}" "${VALKEY_DATA:=/data}" "${WAIT_SECONDS:=120}" "${VALKEY_PASSWORD:=}"
: "${FIRST_PORT:=$VALKEY_PORT}"
. "$(dirname "$0")/primary.sh"
# In a pod (the component's StatefulSet): NAMESPACE and PODS_SERVICE name the pods' DNS names.
: "${SELF:=$(hostname).${PODS_SERVICE}.${NAMESPACE}.svc}"
: "${FIRST:=$(hostname | sed 's/-[0-9]*$//')-0.${PODS_SERVICE}.${NAMESPACE}.svc}"

first=no
[ "$SELF $VALKEY_PORT" = "$FIRST $FIRST_PORT" ] && first=yes
primary="$(primary_named || true)"
waited=0
while [ -z "$primary" ] && [ "$first" = no ] && [ "$waited" -lt "$WAIT_SECONDS" ]; do
  sleep 2
  waited=$((waited + 2))
  primary="$(primary_named || true)"
done
if [ -z "$primary" ] && [ "$first" = no ]; then
  echo "no Sentinel named a primary within ${WAIT_SECONDS} s; starting over" >&2
  exit 1
fi

set -- --port "$VALKEY_PORT" --dir "$VALKEY_DATA" --appendonly yes --appendfsync everysec --save "" \
  --maxmemory-policy noeviction --replica-announce-ip "$SELF" --replica-announce-port "$VALKEY_PORT" "$@"
if [ -n "$VALKEY_PASSWORD" ]; then
  set -- "$@" --requirepass "$VALKEY_PASSWORD" --masterauth "$VALKEY_PASSWORD"
fi
if [ -n "$primary" ] && [ "$primary" != "$SELF $VALKEY_PORT" ]; then
  echo "starting as a replica of $primary" >&2
  # shellcheck disable=SC2086  # "host port", two words on purpose
  set -- "$@" --replicaof $primary
else
  echo "starting as the primary" >&2
fi
exec valkey-server "$@"
