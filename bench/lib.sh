# bench/lib.sh: what the bench scripts share (sourced, not run). Every
# run's output goes to $LOG; cells are medians of $RUNS runs.

# The items/s of one run of a command, or FAIL. Its output goes to the log,
# under the command line.
once() {
    echo "\$ $*" >>"$LOG"
    out=$("$@" 2>>"$LOG" 8<&- 9>&- || true)
    echo "$out" >>"$LOG"
    value=$(echo "$out" | awk '$1 == "throughput" { print int($2); exit }')
    echo "${value:-FAIL}"
}

# "MEDIAN MIN MAX" of the values of several runs; FAIL if one failed, - if
# there were none.
summary() {
    case " $1 " in *" FAIL "*) echo FAIL; return ;; esac
    [ -n "$(echo $1)" ] || { echo -; return; }
    echo "$1" | tr ' ' '\n' | sed '/^$/d' | sort -n \
        | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# A cell: the median in thousands, and the range when there are several runs.
cell() {
    echo "$1" | awk -v runs="$RUNS" '
        function k(x) { return x >= 100000 ? sprintf("%.0fk", x / 1000) : sprintf("%.1fk", x / 1000) }
        $1 == "FAIL" || $1 == "-" { print $1; next }
        { printf "%s", k($1); if (runs > 1) printf " (%s-%s)", k($2), k($3); print "" }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'
}
