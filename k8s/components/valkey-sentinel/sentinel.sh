#!/bin/sh
# The Sentinel beside each data node. Its configuration is written once into SENTINEL_DIR (an emptyDir: the
# Sentinel rewrites it with what it learns, and keeps it across restarts of the container); it monitors the
# primary the other Sentinels name, else the first pod.
#   SENTINELS, SELF, FIRST, FIRST_PORT, VALKEY_PORT, VALKEY_PASSWORD as for valkey.sh; SENTINEL_PORT (26379),
#   SENTINEL_DIR (/sentinel), QUORUM (2), DOWN_AFTER_MS (5000), PRIMARY_NAME (muster), FAILOVER_TIMEOUT_MS (18000:
#   a failover whose vote was split is tried again after twice this)
set -eu
: "${VALKEY_PORT:=6379}" "${SENTINEL_PORT:=26379}" "${FIRST_PORT:=${VALKEY_PORT:-6379}}" "${SENTINEL_DIR:=/sentinel}" "${QUORUM:=2}"
: "${DOWN_AFTER_MS:=5000}" "${PRIMARY_NAME:=muster}" "${VALKEY_PASSWORD:=}" "${FAILOVER_TIMEOUT_MS:=18000}"
. "$(dirname "$0")/primary.sh"
# In a pod (the component's StatefulSet): NAMESPACE and PODS_SERVICE name the pods' DNS names.
: "${SELF:=$(hostname).${PODS_SERVICE}.${NAMESPACE}.svc}"
: "${FIRST:=$(hostname | sed 's/-[0-9]*$//')-0.${PODS_SERVICE}.${NAMESPACE}.svc}"

conf="$SENTINEL_DIR/sentinel.conf"
if [ ! -s "$conf" ]; then
  primary="$(primary_named || true)"
  [ -n "$primary" ] || primary="$FIRST $FIRST_PORT"
  {
    echo "port $SENTINEL_PORT"
    echo "dir $SENTINEL_DIR"
    echo "sentinel resolve-hostnames yes"
    echo "sentinel announce-hostnames yes"
    echo "sentinel announce-ip $SELF"
    echo "sentinel announce-port $SENTINEL_PORT"
    echo "sentinel monitor $PRIMARY_NAME $primary $QUORUM"
    echo "sentinel down-after-milliseconds $PRIMARY_NAME $DOWN_AFTER_MS"
    echo "sentinel failover-timeout $PRIMARY_NAME $FAILOVER_TIMEOUT_MS"
    echo "sentinel parallel-syncs $PRIMARY_NAME 1"
    if [ -n "$VALKEY_PASSWORD" ]; then echo "sentinel auth-pass $PRIMARY_NAME $VALKEY_PASSWORD"; fi
  } > "$conf.new"
  mv "$conf.new" "$conf"
fi
exec valkey-server "$conf" --sentinel
