#!/bin/sh
# Starts this pod's Valkey: a replica of the primary the Sentinels name; the seed (pod 0) starts as primary only
# when no Sentinel names one, so an old primary that restarts after a failover joins as a replica (no split brain).
# SELF the host the others reach this node at (else HOSTNAME.SERVICE, the pod's DNS name); VALKEY_PORT; SEED "host port" of pod 0; SENTINELS, PRIMARY_NAME
# (primary.sh); DATA_DIR; MAXMEMORY (below the container's memory limit, as in base/); VALKEY_PASSWORD;
# VALKEY_BIND (unset: every interface).
set -eu
here=$(dirname "$0")
SELF=${SELF:-$HOSTNAME.$SERVICE}  # in a StatefulSet the hostname is the pod's name
primary=$(sh "$here/primary.sh")
if [ -z "$primary" ] && [ "$SEED" != "$SELF $VALKEY_PORT" ]; then
  primary=$SEED
fi
set -- valkey-server --port "$VALKEY_PORT" --dir "$DATA_DIR" \
  --appendonly yes --appendfsync everysec --save "" --maxmemory "$MAXMEMORY" --maxmemory-policy noeviction \
  --requirepass "$VALKEY_PASSWORD" --masterauth "$VALKEY_PASSWORD" \
  --replica-announce-ip "$SELF" --replica-announce-port "$VALKEY_PORT" ${VALKEY_BIND:+--bind $VALKEY_BIND}
if [ -n "$primary" ] && [ "$primary" != "$SELF $VALKEY_PORT" ]; then
  echo "valkey: starting as a replica of $primary" >&2
  exec "$@" --replicaof $primary
fi
echo "valkey: starting as the primary" >&2
exec "$@"
