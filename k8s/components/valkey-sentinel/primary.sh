# shellcheck shell=sh
# primary_named: "host port" of the primary the first Sentinel that answers names; nothing if none does.
primary_named() {
  for sentinel in $SENTINELS; do
    reply="$(valkey-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
      SENTINEL GET-MASTER-ADDR-BY-NAME "${PRIMARY_NAME:-muster}" 2>/dev/null)" || continue
    host="$(echo "$reply" | sed -n 1p)"
    port="$(echo "$reply" | sed -n 2p)"
    case "$port" in
      '' | *[!0-9]*) continue ;;
    esac
    echo "$host $port"
    return 0
  done
  return 1
}
