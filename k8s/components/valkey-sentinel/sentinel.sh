#!/bin/sh
# Starts this pod's Sentinel. Its configuration is written once per pod into CONF_DIR (an emptyDir): the Sentinel
# rewrites it with what it learns, and a restarted container goes on from there. It monitors the primary the other
# Sentinels name, else the seed (pod 0). SELF (as in valkey.sh), SEED, SENTINELS, PRIMARY_NAME, SENTINEL_PORT, VALKEY_PASSWORD;
# DOWN_AFTER_MS (5000): how long a silent primary is given before the Sentinels fail it over; VALKEY_BIND.
set -eu
here=$(dirname "$0")
SELF=${SELF:-$HOSTNAME.$SERVICE}  # in a StatefulSet the hostname is the pod's name
conf="$CONF_DIR/sentinel.conf"
if [ ! -s "$conf" ]; then
  primary=$(sh "$here/primary.sh")
  set -- ${primary:-$SEED}
  umask 077
  cat > "$conf.new" <<CONF
port $SENTINEL_PORT
${VALKEY_BIND:+bind $VALKEY_BIND}
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
sentinel announce-port $SENTINEL_PORT
sentinel monitor $PRIMARY_NAME $1 $2 2
sentinel auth-pass $PRIMARY_NAME $VALKEY_PASSWORD
sentinel down-after-milliseconds $PRIMARY_NAME ${DOWN_AFTER_MS:-5000}
sentinel failover-timeout $PRIMARY_NAME 60000
sentinel parallel-syncs $PRIMARY_NAME 1
CONF
  mv "$conf.new" "$conf"
fi
exec valkey-server "$conf" --sentinel
