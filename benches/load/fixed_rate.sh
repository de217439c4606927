# Shared by paired_ab.sh and the scripts built on it (sourced, not run,
# after common.sh): a pinned process, CPU time from schedstat, and one slice
# of fixed-rate load with h2load or, with RATE_TOOL=oha, with oha.

start() { # name cpu cmd...: start a pinned background process; sets PID_<name>
    local name=$1 cpu=$2; shift 2
    taskset -c "$cpu" "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

# CPU time in ns of a process's threads, from schedstat (exact, where
# utime+stime count 10 ms ticks)
cpu_ns() {
    local total=0 f t
    for f in /proc/"$1"/task/*/schedstat; do
        read -r t _ <"$f" 2>/dev/null || t=0
        total=$((total + t))
    done
    echo "$total"
}

# One slice with oha (common.sh's oha_at_rate): the load of run.sh's
# fixed-rate case, where h2load sends each connection's requests in bursts
# every 10 ms; prints what fixed_rate prints.
fixed_rate_oha() { # url seconds outfile
    oha_at_rate "$@"
    local ok p50 p99 errs
    read -r ok _ p50 p99 errs < <(oha_summary "$3")
    echo "$ok $p50 $p99 $errs"
}

# One slice: RATE requests/s over 50 connections for `seconds` against
# `url`; prints "succeeded p50_ms p99_ms errors". p50 and p99 are over every
# request's latency in h2load's log. LOAD_PROTO=h2c sends them over HTTP/2
# with prior knowledge (one stream at a time per connection) instead of
# HTTP/1.1.
fixed_rate() { # url seconds outfile
    local url=$1 secs=$2 outf=$3 proto=(--h1)
    if [[ ${RATE_TOOL:-h2load} == oha ]]; then
        fixed_rate_oha "$@"
        return
    fi
    [[ ${LOAD_PROTO:-h1} == h2c ]] && proto=()
    timeout $((secs + 30)) taskset -c "$LOAD_CPU" h2load "${proto[@]}" -t1 -c50 --rps=$(((RATE + 49) / 50)) -D "$secs" \
        --log-file="$outf.log" "$url" >"$outf" 2>&1 || true
    local ok errs p50 p99
    ok=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }' "$outf")
    errs=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/) e += $i }
                /^status codes:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^[345]xx/) e += $i }
                END { print e + 0 }' "$outf")
    # p50 and p99 (nearest rank) of the third column, µs, in ms
    read -r p50 p99 < <(cut -f3 "$outf.log" | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) { print "- -"; exit }
        i = int(NR * 0.50 + 0.5); if (i < 1) i = 1; j = int(NR * 0.99 + 0.5); if (j < 1) j = 1
        printf "%.3f %.3f\n", a[i] / 1000, a[j] / 1000 }')
    rm -f "$outf.log"
    echo "${ok:-0} $p50 $p99 $errs"
}
