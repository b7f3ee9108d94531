#!/usr/bin/env bash
# Onboards four teams onto a LiteLLM proxy the way platform teams script it:
# curl and jq, LiteLLM's management API and field names. Point it at Tollgate
# by changing only the host and the admin key:
#   LITELLM_URL=http://127.0.0.1:3000 LITELLM_MASTER_KEY=sk-tgp-… ./onboard.sh
# Prints "KEY <team> <key>" for each team's kept key and the status the old
# key got after regeneration ("OLD KEY STATUS 401").
set -euo pipefail

URL="${LITELLM_URL:-http://0.0.0.0:4000}"
KEY="${LITELLM_MASTER_KEY:-sk-1234}"
TEAMS=(search ads support research)

api() {
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" "$URL$path" -H "Authorization: Bearer $KEY" "$@"
}

# Teams with a monthly budget.
for team in "${TEAMS[@]}"; do
  id=$(api POST /team/new -d "{\"team_alias\": \"$team\", \"max_budget\": 500, \"budget_duration\": \"1mo\", \"tpm_limit\": 100000, \"rpm_limit\": 600}" | jq -r .team_id)
  echo "team $team: $id"
done

# Model allowlists, naming each team by its alias.
for team in "${TEAMS[@]}"; do
  api POST /team/update -d "{\"team_id\": \"$team\", \"models\": [\"mock/echo\"]}" | jq -c '{team_alias, models}'
done

# People: an existing member becomes a viewer; a newcomer joins "search".
api POST /organization/member_permission_update \
  -d '{"user_email": "dana@a.test", "user_role": "internal_viewer"}' | jq -c '{user_email, status}'
api POST /organization/member_permission_update \
  -d '{"user_email": "erin@a.test", "user_role": "internal_user", "team_id": "search"}' | jq -c '{user_email, status}'

# A 90-day service key per team.
declare -A keys
for team in "${TEAMS[@]}"; do
  keys[$team]=$(api POST /key/generate -d "{\"team_id\": \"$team\", \"key_alias\": \"$team-service\", \"duration\": \"90d\", \"metadata\": {\"owner\": \"platform\"}, \"tags\": [\"onboarding\"]}" | jq -r .key)
done
api GET "/key/list?team_id=search" | jq -c '{total_count}'

# Rotate search's key; the old one must be refused at once.
old=${keys[search]}
keys[search]=$(api POST /key/regenerate -d "{\"key\": \"$old\"}" | jq -r .key)
status=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/chat/completions" \
  -H "Authorization: Bearer $old" -H 'Content-Type: application/json' \
  -d '{"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}')
echo "OLD KEY STATUS $status"

# Offboard research's key.
api POST /key/delete -d "{\"keys\": [\"${keys[research]}\"]}" | jq -c .
unset 'keys[research]'

api GET "/team/info?team_id=search" | jq -c '{team_id, keys: (.keys | length)}'
for team in "${!keys[@]}"; do
  echo "KEY $team ${keys[$team]}"
done
