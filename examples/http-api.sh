#!/usr/bin/env bash
# Request a node over nodepool-rs's HTTP API, "use" it, and give it back.
#
# Start a launcher with the quickstart config and the example secure file
# (which holds the API token), then run this script from the repository root:
#
#   nodepool -c examples/quickstart.yaml -s examples/secure.yaml \
#       --state-dir .nodepool launcher &
#   examples/http-api.sh
#
# Needs curl and jq. Settings (environment):
#   NODEPOOL_URL        the web app (default http://127.0.0.1:8005)
#   NODEPOOL_API_TOKEN  the bearer token (default: api-token of examples/secure.yaml)
#   LABEL               the label to request (default ubuntu-noble)
#   TIMEOUT             seconds to wait for the node (default 300)
#
# The three calls:
#   POST /api/v1/requests              {"labels": [...]}  -> 201 {"id": ...}
#   GET  /api/v1/requests/{id}         -> {"state": "requested|pending|fulfilled|failed", "nodes": [...]}
#   POST /api/v1/nodes/{id}/release    -> the node is marked used; the launcher deletes it
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
url=${NODEPOOL_URL:-http://127.0.0.1:8005}
token=${NODEPOOL_API_TOKEN:-$(sed -n 's/^api-token: *//p' "$here/secure.yaml")}
label=${LABEL:-ubuntu-noble}
timeout=${TIMEOUT:-300}
auth=(-H "Authorization: Bearer $token")

# 1. Ask for one node of $label.
request=$(curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' \
    -d "{\"labels\": [\"$label\"], \"requestor\": \"http-api-example\"}" \
    "$url/api/v1/requests")
id=$(jq -r .id <<<"$request")
echo "submitted node request $id for $label"

# 2. Wait until it is fulfilled: the nodes are then locked for us, in use.
deadline=$((SECONDS + timeout))
while :; do
    status=$(curl -sS --fail-with-body "${auth[@]}" "$url/api/v1/requests/$id")
    state=$(jq -r .state <<<"$status")
    case $state in
        fulfilled) break ;;
        failed) echo "node request $id failed: $(jq -r .error <<<"$status")" >&2; exit 1 ;;
    esac
    if ((SECONDS >= deadline)); then
        echo "node request $id not fulfilled after ${timeout}s (state $state)" >&2
        exit 1
    fi
    sleep 1
done

# 3. Use the nodes: here we only print how to reach them.
jq -r '.nodes[] | "node \(.id): \(.labels | join(",")) at \(.interface_ip) (\(.connection_type) port \(.connection_port), user \(.username))"' <<<"$status"

# 4. Give them back (releasing one node releases the request's nodes).
node=$(jq -r '.nodes[0].id' <<<"$status")
released=$(curl -sS --fail-with-body -X POST "${auth[@]}" "$url/api/v1/nodes/$node/release")
echo "released $(jq -r '.released | join(", ")' <<<"$released")"
