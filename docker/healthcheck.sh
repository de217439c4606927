#!/usr/bin/env bash
# The image's HEALTHCHECK: GET a path of cutover's admin API and succeed only
# on a 200. It needs nothing but bash (its /dev/tcp redirection), so the
# runtime image carries no curl or wget.
#
#   cutover-healthcheck            # GET /healthz: 200 while the process lives
#   cutover-healthcheck /ready     # GET /ready: 200 while serving, 503 once shutting down
#
# CUTOVER_ADMIN_HOST and CUTOVER_ADMIN_PORT say where the admin API listens
# (default 127.0.0.1:9901, which `[admin] listen = "0.0.0.0:9901"` covers).
# Exit 0 healthy, 1 anything else: refused, no answer within 3 seconds, or
# another status.
set -euo pipefail

host="${CUTOVER_ADMIN_HOST:-127.0.0.1}"
port="${CUTOVER_ADMIN_PORT:-9901}"
path="${1:-/healthz}"

if ! exec 3<>"/dev/tcp/${host}/${port}"; then
    echo "cutover admin API at ${host}:${port}: cannot connect" >&2
    exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: cutover-healthcheck\r\nConnection: close\r\n\r\n' \
    "$path" "$host" "$port" >&3
status_line=""
if ! IFS= read -r -t 3 status_line <&3; then
    echo "cutover admin API at ${host}:${port}: no answer to GET ${path}" >&2
    exit 1
fi
exec 3<&-
status_line="${status_line%$'\r'}"
case "$status_line" in
    "HTTP/1.1 200 "* | "HTTP/1.0 200 "* | "HTTP/1.1 200" | "HTTP/1.0 200")
        exit 0
        ;;
    *)
        echo "cutover admin API at ${host}:${port}: GET ${path} answered: ${status_line}" >&2
        exit 1
        ;;
esac
