#!/usr/bin/env bash
# The Debian packages, built and inspected without installing them (nothing
# on this machine changes; all in a temporary directory):
#
#   tests/install/deb.sh BUILD_DIR        (exit 77 = a tool is missing)
#
# 1. `cpack -G DEB` makes asyncq_V_ARCH.deb and asyncq-dev_V_ARCH.deb; their
#    control fields (dependencies computed by dpkg-shlibdeps, the shlibs
#    file, the ldconfig trigger, maintainer scripts that parse) and contents
#    are as the install rules say.
# 2. Unpacked into a root of their own, the programs run (--help, --version)
#    and the library has its SONAME.
# 3. systemd-analyze verifies asyncq-broker.service against that root,
#    offline (--root: the unit's programs are looked up there; no systemd
#    needs to run), and rates its sandboxing.
# 4. Every program has a man page that groff renders without a warning,
#    man -l shows, and lexgrog finds a NAME section in.
set -euo pipefail

build=$(cd "${1:?usage: deb.sh BUILD_DIR}" && pwd)
skip() { echo "SKIPPED: $*"; exit 77; }
for tool in cpack dpkg-deb dpkg-shlibdeps file readelf systemd-analyze groff man lexgrog help2man; do
  command -v "$tool" >/dev/null || skip "$tool is missing (apt-get install dpkg-dev file binutils systemd groff-base man-db help2man)"
done
type -P kill >/dev/null || skip "kill is missing (apt-get install procps)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
programs=(asyncq-broker asyncq-producer asyncq-consumer asyncq)

echo "== cpack -G DEB"
(cd "$build" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; fail "cpack"; }
version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
# The project's one version (CMakeLists.txt) is the packages', the
# programs' and the library's; the SONAME carries its major.
major=${version%%.*}
[ -n "$version" ] && [ "$major" != "$version" ] || fail "no version in CPackConfig.cmake: '$version'"
arch=$(dpkg --print-architecture)
deb=$work/out/asyncq_${version}_$arch.deb
dev=$work/out/asyncq-dev_${version}_$arch.deb
[ -f "$deb" ] && [ -f "$dev" ] || { ls "$work/out"; fail "asyncq and asyncq-dev $version ($arch) not both made"; }
ls -l "$work/out"/*.deb

echo "== control"
field() { dpkg-deb -f "$1" "$2"; }
depends=$(field "$deb" Depends)
echo "asyncq Depends: $depends"
for package in adduser procps libzmq5 libczmq4 libc6; do
  [[ ", $depends," == *", $package"[\ ,]* ]] || fail "asyncq does not depend on $package"
done
dev_depends=$(field "$dev" Depends)
echo "asyncq-dev Depends: $dev_depends"
[[ "$dev_depends" == *"asyncq (= $version)"* ]] || fail "asyncq-dev does not depend on asyncq (= $version)"
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
grep -qx "libasyncq $major asyncq (= $version)" "$work/control/shlibs" || fail "shlibs: $(cat "$work/control/shlibs")"
grep -qx "activate-noawait ldconfig" "$work/control/triggers" || fail "no ldconfig trigger"
for script in postinst prerm postrm; do
  [ -x "$work/control/$script" ] || fail "$script is missing or not executable"
  sh -n "$work/control/$script" || fail "$script does not parse"
done

echo "== contents"
listing() { dpkg-deb -c "$1" | awk '{print $6}' | sed 's|^\./|/|'; }
listing "$deb" >"$work/deb.list"
listing "$dev" >"$work/dev.list"
expect() { # list, path...
  local list=$1; shift
  for path in "$@"; do grep -qx "$path" "$work/$list.list" || fail "$list package lacks $path"; done
}
expect deb /usr/lib/systemd/system/asyncq-broker.service /usr/share/asyncq/asyncq-broker.default \
  "/usr/lib/libasyncq.so.$major" "/usr/lib/libasyncq.so.$version"
for program in "${programs[@]}"; do
  expect deb "/usr/bin/$program" "/usr/share/man/man1/$program.1.gz"
done
expect dev /usr/include/asyncq/asyncq.h /usr/include/asyncq/producer.h /usr/include/asyncq/version.h \
  /usr/lib/libasyncq.so /usr/lib/libasyncq.a /usr/lib/pkgconfig/asyncq.pc
if grep -v '^/usr/' "$work/deb.list" "$work/dev.list" | grep -v ':/$'; then
  fail "files outside /usr (the settings file is made by postinst, not shipped)"
fi
if grep -q '\.h$\|\.pc$\|\.a$' "$work/deb.list"; then fail "development files in asyncq"; fi
# The library's internal headers (codec, wire...) are not part of its API.
if grep -v -E '^/usr/include/asyncq/(asyncq|consumer|control|producer|security|session|status|types|version)\.h$' \
     "$work/dev.list" | grep '^/usr/include/.*\.h$'; then
  fail "asyncq-dev ships headers outside the public API (above)"
fi
echo "asyncq: $(grep -cv '/$' "$work/deb.list") files; asyncq-dev: $(grep -cv '/$' "$work/dev.list")"

echo "== unpacked: the programs and the library"
root=$work/root
dpkg-deb -x "$deb" "$root"
dpkg-deb -x "$dev" "$root"
for program in "${programs[@]}"; do
  "$root/usr/bin/$program" --help >"$work/help" || fail "$program --help"
  [ -s "$work/help" ] || fail "$program --help printed nothing"
  out=$("$root/usr/bin/$program" --version) || fail "$program --version"
  [ "$out" = "$program $version" ] || fail "$program --version printed '$out'"
  echo "$out"
done
grep -q -- '--data-dir' <("$root/usr/bin/asyncq-broker" --help) || fail "asyncq-broker --help"
readelf -d "$root/usr/lib/libasyncq.so.$version" | grep -q "SONAME.*\[libasyncq\.so\.$major\]" \
  || fail "libasyncq.so.$version: no SONAME libasyncq.so.$major"
[ "$(readlink "$root/usr/lib/libasyncq.so")" = "libasyncq.so.$major" ] \
  || fail "libasyncq.so -> libasyncq.so.$major"

echo "== systemd-analyze verify (offline, --root)"
unit=$root/usr/lib/systemd/system/asyncq-broker.service
grep -qx 'ExecStart=/usr/bin/asyncq-broker' "$unit" || fail "ExecStart is not the package's broker"
# ExecReload's kill comes from procps (a dependency), not from the package:
# the host's stands in for it in the unpacked root.
mkdir -p "$root/bin"
cp "$(type -P kill)" "$root/bin/kill"
# --recursive-errors=no: the unit's own errors only; the root has no
# sysinit.target and the other units systemd itself ships.
systemd-analyze verify --man=no --recursive-errors=no --root="$root" asyncq-broker.service \
  >"$work/verify.log" 2>&1 || { cat "$work/verify.log"; fail "systemd-analyze verify"; }
if [ -s "$work/verify.log" ]; then cat "$work/verify.log"; fail "systemd-analyze verify warned"; fi
echo "verified: no warning"
systemd-analyze security --offline=yes --root="$root" asyncq-broker.service >"$work/security.log" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for asyncq-broker.service: \([0-9.]*\).*/\1/p' "$work/security.log")
[ -n "$exposure" ] || { cat "$work/security.log"; fail "systemd-analyze security gave no exposure level"; }
echo "exposure level $exposure (0 = fully sandboxed, 10 = not at all)"
# The hardening in the unit makes it 1.7; a setting lost shows as a rise.
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.5) }' || { cat "$work/security.log"; fail "exposure $exposure > 2.5"; }

echo "== man pages"
for program in "${programs[@]}"; do
  page=$root/usr/share/man/man1/$program.1.gz
  warnings=$(zcat "$page" | groff -man -Tutf8 -ww -z 2>&1)
  [ -z "$warnings" ] || fail "$program.1: $warnings"
  lexgrog "$page" >/dev/null || fail "$program.1: lexgrog finds no NAME section"
  MANWIDTH=80 man -l "$page" 2>/dev/null >"$work/man.txt" || fail "man -l $program.1"
  grep -q "^NAME" "$work/man.txt" && grep -q -- "--version" "$work/man.txt" || fail "man -l $program.1: $(head "$work/man.txt")"
  echo "$program.1: $(lexgrog "$page" | cut -d'"' -f2)"
done
echo "PASS"
