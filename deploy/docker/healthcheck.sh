#!/bin/bash
# The image's HEALTHCHECK: healthy when GET /health/ready answers 200 (models loaded, not draining).
# Plain bash (/dev/tcp), so the runtime image needs no curl. The port is $APUS_PORT (default 8080):
# set it too when you run `apus serve --port` with another port.
port=${APUS_PORT:-8080}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 || exit 1
read -r -t 4 _ status _ <&3 || exit 1
[ "$status" = 200 ]
