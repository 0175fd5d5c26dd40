#!/usr/bin/env bash
# Drill (issue #9, "Done when"): `fare-validator run --server` keeps
# uploading through a settlement restart. One machine plays every part on
# loopback: a service, a passenger's phone, a bus reader fed ride codes
# through a FIFO. Five rides are acknowledged, the service is killed with
# SIGKILL, five more rides are accepted while the reader's agent retries,
# the service restarts on the same data, and all ten must be acknowledged.
#
# Usage: validator/drills/server-restart.sh [BIN_DIR] [WORK_DIR]
#   BIN_DIR  where fare-settlement, fare-wallet and fare-validator are
#            (default target/debug: `cargo build -p fare-settlement
#            -p fare-wallet -p fare-validator` first)
#   WORK_DIR a scratch folder, emptied first (default /tmp/fare-drill-restart)
# Needs curl and python3. Exits 0 when every check held.
set -u
B=$(realpath "${1:-target/debug}")
W=${2:-/tmp/fare-drill-restart}
PORT=18080
S=http://127.0.0.1:$PORT
rm -rf "$W" && mkdir -p "$W" && cd "$W" || exit 2

fail() { echo "FAILED: $*"; kill "$(cat serve.pid)" 2>/dev/null; exit 1; }
# The service must not inherit the FIFO's write end (fd 3), or the reader
# would never see the end of its input.
serve() {
    "$B/fare-settlement" serve --data DATA --listen 127.0.0.1:$PORT >>serve.log 2>&1 3>&- &
    echo $! >serve.pid
    for _ in $(seq 50); do curl -sf $S/healthz >/dev/null && return; sleep 0.2; done
    fail "the service did not start (serve.log)"
}
acked() {
    curl -s -H "Authorization: Bearer $FARE_OPERATOR_TOKEN" $S/v1/readers | python3 -c \
        'import json,sys; print([r["acked_seq"] for r in json.load(sys.stdin) if r["reader"]["reader_id"] == 7][0])'
}
ride() { "$B/fare-wallet" code --dir WALLET --hex 2>/dev/null >&3; sleep 1; }

serve
export FARE_OPERATOR_TOKEN=$(cat DATA/operator-token)
"$B/fare-settlement" admin --server $S create-account --account alice --profile adult >/dev/null || fail "create-account"
TOKEN=$("$B/fare-settlement" admin --server $S enrol --account alice --label phone |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || fail "enrol"
"$B/fare-wallet" enroll --dir WALLET --server $S --account alice --token "$TOKEN" >/dev/null 2>&1 || fail "wallet enroll"
"$B/fare-validator" provision --dir READER --reader-id 7 --operator city-bus --vehicle BUS-1 --route 1 \
    --root-key DATA/keys/root.pub --server $S --operator-token "$FARE_OPERATOR_TOKEN" >/dev/null 2>&1 || fail "provision"
sed -i 's/^interval_ms = .*/interval_ms = 2000/' READER/reader.toml # a contact every 2 s

mkfifo codes
"$B/fare-validator" run --dir READER --frames - --server $S <codes >decisions.jsonl 2>run.log &
RUN=$!
exec 3>codes
for _ in 1 2 3 4 5; do ride; done
sleep 6
[ "$(acked)" = 5 ] || fail "5 rides not acknowledged before the kill"
echo "$(date +%T) acked_seq 5; killing the service"
{ kill -9 "$(cat serve.pid)" && wait "$(cat serve.pid)"; } 2>/dev/null
for _ in 1 2 3 4 5; do ride; done
sleep 8
[ "$(grep -c '"accept"' decisions.jsonl)" = 10 ] || fail "not every ride accepted offline (decisions.jsonl)"
serve
echo "$(date +%T) service restarted"
for _ in $(seq 60); do [ "$(acked)" = 10 ] && break; sleep 1; done
[ "$(acked)" = 10 ] || fail "rides 6..10 not acknowledged within 60 s of the restart (run.log)"
echo "$(date +%T) acked_seq 10"
exec 3>&-
wait $RUN || fail "fare-validator run exited non-zero (run.log)"
echo "agent retries while the service was down: $(grep -c 'retrying' run.log)"
"$B/fare-validator" status --dir READER --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
got = (d["acked_up_to"], d["unacked"], d["sync_state"], d["sync"]["last_error"])
print("acked_up_to, unacked, sync_state, last_error:", got)
sys.exit(0 if got == (10, 0, "ok", None) else 1)' ||
    fail "status after the run"
kill "$(cat serve.pid)"
echo "drill passed"
