#!/usr/bin/env bash
# The installed library, used the way its users use it:
#
#   tests/install/library.sh BUILD_DIR LIBDIR     (env CC, ASYNCQ_TEST_CFLAGS)
#
# 1. `cmake --install BUILD_DIR --prefix TMP` installs libasyncq.so.N (with
#    its SONAME), libasyncq.a, the headers under include/asyncq and asyncq.pc.
# 2. The public headers are exactly the API's (the codec, the wire, the
#    endpoints and the session's insides are not installed), each compiles
#    on its own as strict C11 with zmq.h and czmq.h made to fail (a
#    directory of poisoned copies first on the include path), and none of
#    them pulls in ZeroMQ's or czmq's headers; asyncq.pc does not make a
#    user's program depend on libzmq (Requires.private only).
# 3. libasyncq.so exports exactly the functions the installed headers declare
#    (libasyncq.map and the headers agree), nothing else, and only names of
#    the public API's prefixes: aq_producer_*, aq_consumer_*, aq_session_*,
#    aq_security_*, and aq_join, aq_stats, aq_info, aq_dead, aq_shutdown, aq_peek,
#    aq_queue_action, aq_replicas, aq_keygen, aq_last_error, aq_status_name,
#    aq_strerror, aq_version.
# 4. hello.c builds with `pkg-config --cflags --libs asyncq` from the installed
#    copy alone, once against the shared library and once against the static
#    one, and both make a round trip (put, sync, get, ack, join) through the
#    installed broker, started here on a free loopback port.
# Everything lives in a temporary directory, removed at the end.
set -euo pipefail

build=$(cd "${1:?usage: library.sh BUILD_DIR LIBDIR}" && pwd)
libdir=${2:?usage: library.sh BUILD_DIR LIBDIR}
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
read -r -a cflags <<<"${ASYNCQ_TEST_CFLAGS:-}"
work=$(mktemp -d)
prefix=$work/prefix
broker=""

cleanup() {
  set +e
  if [ -n "$broker" ]; then kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== cmake --install --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "install"; }
for file in "$libdir/libasyncq.so" "$libdir/libasyncq.a" "$libdir/pkgconfig/asyncq.pc" \
            include/asyncq/asyncq.h include/asyncq/version.h bin/asyncq-broker; do
  [ -e "$prefix/$file" ] || fail "$file is not installed"
done
soname=$(readelf -d "$prefix/$libdir/libasyncq.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ -f "$prefix/$libdir/$soname" ] || fail "SONAME '$soname' is not installed beside libasyncq.so"
echo "SONAME $soname"

export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
version=$(pkg-config --modversion asyncq)
read -r -a flags <<<"$(pkg-config --cflags --libs asyncq)"
echo "asyncq.pc: version $version, ${flags[*]}"

echo "== the installed headers: the public API, without ZeroMQ's"
public="asyncq.h consumer.h control.h producer.h security.h session.h status.h types.h version.h"
installed=$(cd "$prefix/include/asyncq" && ls | tr '\n' ' ' | sed 's/ $//')
[ "$installed" = "$public" ] || fail "include/asyncq holds '$installed', not '$public'"
mkdir "$work/poison"
for header in zmq.h czmq.h zmq_utils.h; do
  echo "#error \"a public asyncq header includes $header\"" >"$work/poison/$header"
done
for header in $public; do
  echo "#include <asyncq/$header>" | "$cc" "${cflags[@]}" -std=c11 -pedantic -Wall -Wextra -Werror \
    -fsyntax-only -I"$work/poison" $(pkg-config --cflags asyncq) -x c - \
    || fail "asyncq/$header does not compile on its own without zmq.h and czmq.h"
done
echo '#include <asyncq/asyncq.h>' | "$cc" -M $(pkg-config --cflags asyncq) -x c - >"$work/deps"
if grep -E '(^|[ /])c?zmq[a-z_]*\.h' "$work/deps"; then
  fail "asyncq/asyncq.h pulls in ZeroMQ's or czmq's headers"
fi
requires=$(pkg-config --print-requires asyncq)
[ -z "$requires" ] || fail "asyncq.pc Requires '$requires': a user's program need not see them"
echo "$public: each compiles alone (C11, -pedantic), none includes zmq.h or czmq.h"

echo "== exports: libasyncq.so against the installed headers"
# Declared: every aq_ name followed by "(" once the umbrella header is
# preprocessed (comments gone; typedefs of function types read "aq_x)(").
echo '#include <asyncq/asyncq.h>' | "$cc" -E -P $(pkg-config --cflags asyncq) -x c - \
  | grep -oE '\baq_[a-z0-9_]+ *\(' | tr -d ' (' | sort -u >"$work/declared"
nm -D --defined-only "$prefix/$libdir/libasyncq.so" | awk '{print $3}' | sed 's/@.*//' \
  | grep -vx 'ASYNCQ_[0-9]*' | sort -u >"$work/exported"
if ! diff -u --label declared --label exported "$work/declared" "$work/exported"; then
  fail "libasyncq.so does not export what the headers declare (common/libasyncq.map)"
fi
api='^aq_(producer|consumer|session|security)_[a-z0-9_]+$|^aq_(join|stats|info|dead|shutdown|peek|queue_action|replicas|keygen|last_error|status_name|strerror|version)$'
if grep -vE "$api" "$work/exported"; then
  fail "libasyncq.so exports names outside the public API's prefixes (above)"
fi
echo "$(wc -l <"$work/exported") functions, as declared, all of the public API's prefixes"

echo "== hello.c against the installed copy"
"$cc" "${cflags[@]}" -Wall -Wextra -Werror -o "$work/hello" "$here/hello.c" "${flags[@]}"
readelf -d "$work/hello" | grep -q "NEEDED.*\[$soname\]" || fail "hello does not use $soname"
# The static library: libasyncq.a, then what it needs of libczmq and libzmq.
"$cc" "${cflags[@]}" -Wall -Wextra -Werror -o "$work/hello-static" "$here/hello.c" \
  $(pkg-config --cflags asyncq) "$(pkg-config --variable=libdir asyncq)/libasyncq.a" \
  $(pkg-config --libs libczmq libzmq) -lm
if readelf -d "$work/hello-static" | grep -q "NEEDED.*libasyncq"; then
  fail "hello-static needs a shared libasyncq"
fi

echo "== a round trip through the installed broker"
mkfifo "$work/broker.out"
"$prefix/bin/asyncq-broker" --bind 127.0.0.1:0 >"$work/broker.out" 2>"$work/broker.log" &
broker=$!
exec 3<"$work/broker.out"
read -r -t 30 ready address <&3 || { cat "$work/broker.log"; fail "the broker did not start"; }
[ "$ready" = READY ] || fail "the broker said '$ready $address'"
echo "broker at $address"

export LD_LIBRARY_PATH=$prefix/$libdir
loaded=$(LD_TRACE_LOADED_OBJECTS=1 "$work/hello" | awk '$1 == "'"$soname"'" {print $3}')
[ "$loaded" = "$prefix/$libdir/$soname" ] || fail "hello loads '$loaded', not the installed copy"
expected="hello from libasyncq $version: joined"
for program in hello hello-static; do
  out=$(timeout 60 "$work/$program" "$address") || { cat "$work/broker.log"; fail "$program: exit $?"; }
  [ "$out" = "$expected" ] || fail "$program printed '$out'"
  echo "$program: $out"
done
echo "PASS"
