# Shared by the scripts that start engines of their own (compare_builds, compare_latency,
# audit_growth): a temporary work dir, the engines, and stopping them on exit. Source it;
# it sets WORK and TOKEN, and HERE must be this directory.
#
#   start_engine NAME BIN PUBLIC_PORT   # admin on PUBLIC_PORT + 1; data in $WORK/NAME; sets ENGINE_PID
#   wait_healthy PORT...                # until each answers /healthz (10 s at most each)
#   require_free_ports PORT...          # exits if something already listens on one of them
#   seed_engine PUBLIC_PORT COUNT       # COUNT workspaces, one live key each: $WORK/keys-PUBLIC_PORT.txt
#   run PORT KEYS                       # one wrk -t2 -c64 run of SECONDS_PER_RUN s over KEYS; prints req/s
#   requests                            # how many requests that run made
#   client_us_per_request               # wrk's own CPU time per request in that run, in µs
#   cpu_ticks PID                       # the process's CPU time so far, in clock ticks
#   drain ADMIN_PORT                    # until the engine has written its audit backlog (60 s at most)

TOKEN="loadtest-admin-token-0123456789abcdef"
# KEEP_WORK=1 keeps the work dir (the engines' logs) after exit, to see why one failed.
WORK="$(mktemp -d /tmp/statuspulse-loadtest-engines.XXXXXX)"
PIDS=()
stop_everything() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap stop_everything EXIT

# Fresh SQLite data dir, 2 HTTP workers, RUST_LOG as set or info.
start_engine() {
    require_free_ports "$3" "$(($3 + 1))"
    env STATUSPULSE_DATA_DIR="$WORK/$1" STATUSPULSE_PUBLIC_ADDR="127.0.0.1:$3" \
        STATUSPULSE_ADMIN_ADDR="127.0.0.1:$(($3 + 1))" STATUSPULSE_ADMIN_TOKEN="$TOKEN" \
        STATUSPULSE_HTTP_WORKERS=2 RUST_LOG="${RUST_LOG:-info}" "$2" serve > "$WORK/$1.log" 2>&1 &
    ENGINE_PID=$!
    PIDS+=("$ENGINE_PID")
}

wait_healthy() {
    for port in "$@"; do
        for _ in $(seq 100); do
            curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
            sleep 0.1
        done
    done
}

# require_free_ports PORT...: stops the script if anything listens on a port it is about to
# use, which would answer /healthz and the load in place of the server under test.
require_free_ports() {
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port is taken: stop what listens there (ss -ltnp 'sport = :$port')" >&2
            exit 1
        fi
    done
}

seed_engine() {
    python3 "$HERE/seed.py" --admin-url "http://127.0.0.1:$(($1 + 1))" --admin-token "$TOKEN" \
        --count "$2" --out "$WORK/keys-$1.txt" 2> "$WORK/seed-$1.log"
}

# run PORT KEYS: one wrk run; prints req/s and leaves wrk's report in $WORK/last.txt and the
# shell's `times` before and after it (its second line: the CPU of waited-for children, so
# the difference is wrk's) in $WORK/times-*.txt.
run() {
    times > "$WORK/times-before.txt"
    wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" -s "$HERE/authz_keys.lua" "http://127.0.0.1:$1" -- "$2" 2 \
        > "$WORK/last.txt" 2>&1
    times > "$WORK/times-after.txt"
    awk '/Requests\/sec/ {print $2}' "$WORK/last.txt"
}
requests() { awk '/requests in/ {print $1}' "$WORK/last.txt"; }
# The load generator shares the cores with the server, and what it spends per request depends
# on the answers it parses: part of any throughput ratio measured here is the client's.
client_us_per_request() {
    awk -v requests="$(requests)" '
        function seconds(t) { split(t, p, "m"); return p[1] * 60 + substr(p[2], 1, length(p[2]) - 1) }
        FNR == 2 { cpu = seconds($1) + seconds($2); if (FILENAME ~ /before/) start = cpu; else end = cpu }
        END { printf "%.1f\n", (end - start) / requests * 1e6 }
    ' "$WORK/times-before.txt" "$WORK/times-after.txt"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# drain ADMIN_PORT: waits (up to 60 s) until the engine has written its audit backlog.
drain() {
    for _ in $(seq 120); do
        pending="$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/metrics" \
            | awk '/^statuspulse_audit_events_pending / {print $2}')"
        [[ "$pending" == "0" ]] && return 0
        sleep 0.5
    done
}
