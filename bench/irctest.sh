#!/bin/bash
# irctest's server suite against the IRC gateway (docs/IRC.md, "The conformance suite"):
# the markers irctest's Makefile gives ngircd, its external-server controller, and a
# fresh chat-server for each test, as irctest's own controllers start one per test (one
# server for the whole run leaks state from test to test: clients a failed setUp never
# closed still hold their nicks). Prints one line per test and the counts.
#
#   IRCTEST=/path/to/irctest IRCTEST_PYTHON=/path/to/venv/bin/python bench/irctest.sh [JOBS]
#
# irctest and its requirements (pytest, pytest-timeout) in a venv of their own; loopback only.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
irctest=${IRCTEST:?set IRCTEST to a checkout of https://github.com/progval/irctest}
py=${IRCTEST_PYTHON:-python3}
server=${CHAT_SERVER:-$here/.venv/bin/chat-server}
jobs=${1:-4}
markers='not services and not implementation-specific and not deprecated and not strict'
out=$(mktemp -d /tmp/irctest-run.XXXXXX)

one() {  # one test, its own server on a free port
    local id=$1 dir port pid result
    dir=$(mktemp -d "$out/t.XXXXXX")
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # irctest's server-password tests expect the password their controllers configure.
    local extra=()
    case $id in *PasswordedConnectionRegistrationTestCase*) extra=(--irc-password testpassword) ;; esac
    "$server" --port 0 --irc-port "$port" --irc-guests --irc-server-name My.Little.Server \
        --rate-limit off --irc-oper operuser:operpassword "${extra[@]}" --db "$dir/chat.db" \
        >"$dir/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    (cd "$irctest" && IRCTEST_SERVER_HOSTNAME=127.0.0.1 IRCTEST_SERVER_PORT=$port \
        timeout 120 "$py" -m pytest -p no:cacheprovider -rA --timeout 40 \
        --controller irctest.controllers.external_server -m "$markers" "$id") \
        >"$dir/pytest.txt" 2>&1 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    result=$(grep -m1 -oE '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)' "$dir/pytest.txt" || echo NONE)
    printf '%s %s %s\n' "$result" "$id" "$dir"
}
export -f one
export out irctest py server markers

(cd "$irctest" && IRCTEST_SERVER_HOSTNAME=127.0.0.1 IRCTEST_SERVER_PORT=1 "$py" -m pytest \
    -p no:cacheprovider --controller irctest.controllers.external_server -m "$markers" \
    --collect-only -q irctest/server_tests 2>/dev/null | grep '::') >"$out/ids"
tr '\n' '\0' <"$out/ids" | xargs -0 -P "$jobs" -I{} bash -c 'one "$1"' _ {} | sort -k2 | tee "$out/results"
echo "results in $out/results (each test's server log and pytest output beside it)"
awk '{print $1}' "$out/results" | sort | uniq -c
