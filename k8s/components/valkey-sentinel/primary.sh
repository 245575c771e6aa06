#!/bin/sh
# Prints "host port" of the primary the Sentinels name, or nothing when no Sentinel answers with one.
# SENTINELS: every Sentinel of the group, "host:port" separated by spaces; PRIMARY_NAME: the monitored name.
for sentinel in $SENTINELS; do
  answer=$(valkey-cli -t 1 -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
    SENTINEL GET-MASTER-ADDR-BY-NAME "$PRIMARY_NAME" 2>/dev/null | tr '\n' ' ')
  set -- $answer
  if [ $# -eq 2 ] && [ "$2" -gt 0 ] 2>/dev/null; then
    echo "$1 $2"
    exit 0
  fi
done
