#!/bin/sh
# A 32-bit Unix MicroPython with the firmware frozen in, for `make bench` (make mp32); with
# --stock, one standing for a stock ESP32 image instead (boards/unix32/stock.py: no firmware
# frozen, only the micropython-lib modules a stock image freezes that the firmware imports), on
# which the bench runs the firmware as .mpy files, as `deploy` installs it on such a board.
#
# An ESP32 is a 32-bit machine whose firmware is frozen into flash; the 64-bit unix port from
# the wheel keeps every object twice as wide and the bytecode in the GC heap. This builds the
# unix port the way an ESP32 image is built, from sources the machine's own package sources
# provide: Debian's `micropython` source package and its `mbedtls`. Nothing here is committed:
# sources, objects and the binary stay under build/mp32/ (git-ignored).
#
#   1. apt, with a private configuration under build/mp32/apt (the system's stays untouched):
#      deb-src lines for the Debian suites that ship these versions, on the mirror the machine's
#      apt sources already use; `apt-get source --download-only` checks every file against the
#      signed index.
#   2. unpack MicroPython; its +ds tarball has lib/mbedtls empty: unpack mbedTLS there. Apply
#      Debian's patch that lets a build freeze modules without the micropython-lib submodule.
#   3. make mpy-cross, then ports/unix 32-bit with mbedTLS and boards/unix32/manifest.py frozen
#      (the firmware through firmware/manifest.py, plus a small ssl module over the tls one),
#      into build/mp32/unix. --stock: boards/unix32/stock.py frozen, into build/mp32/unix-stock,
#      started from a copy of build/mp32/unix when that exists: the C objects do not depend on
#      what is frozen (frozen modules' names go into frozen_content.c's own qstr pool), so only
#      frozen_content.c is compiled and the binary linked (a few seconds; about 1 min without it).
#   4. whether to build at all is decided by content, not by file times (build_inputs.py): a
#      digest of the source versions, make flags and compiler (the objects), and of every file
#      the manifest freezes with its path on the device, plus the manifests (the frozen part).
#      Equal to the record next to the binary (BIN.json): nothing is built. Objects differ (or
#      have no record): the object folder starts over. Frozen part differs: the frozen modules
#      are compiled again from the files as they are now and the binary relinked. After a
#      build, the record (with `git describe --always --dirty` of the tree) goes next to the
#      binary and into the object folder (inputs.json); `make bench` prints and stores it.
#
# Prints one line at the end: the path of the binary, or "mp32: ..." saying why there is none
# (exit 1). Needs: apt-get, a C compiler that can build 32-bit code (gcc-multilib: installed
# here when run as root, as on CI), make, python3. About 1 min the first time; later runs build
# only when the inputs changed (a few seconds to re-freeze).
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${MP32_DIR:-$REPO/build/mp32}
# The versions measured (override to try others; `apt-cache showsrc` lists what a mirror has).
MP_VERSION=${MP32_MICROPYTHON:-1.26.1+ds-1}
MBEDTLS_VERSION=${MP32_MBEDTLS:-3.6.6-0.1~deb13u1}
SUITES=${MP32_SUITES:-"sid trixie"}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

STOCK=0
case "${1:-}" in
    --stock) STOCK=1 ;;
    "") ;;
    *) echo "usage: build32.sh [--stock]" >&2; exit 2 ;;
esac
if [ "$STOCK" = 1 ]; then
    NAME="mp32 stock"; MANIFEST=$REPO/boards/unix32/stock.py; UNIX=$OUT/unix-stock; LOG=$OUT/build-stock.log
    BIN=$OUT/micropython-stock
else
    NAME="mp32"; MANIFEST=$REPO/boards/unix32/manifest.py; UNIX=$OUT/unix; LOG=$OUT/build.log
    BIN=$OUT/micropython
fi

fail() { echo "$NAME: $*" >&2; exit 1; }

command -v apt-get >/dev/null || fail "no apt-get: this build uses Debian's source packages"
command -v make >/dev/null || fail "no make"
command -v python3 >/dev/null || fail "no python3 (MicroPython's build scripts need it)"
CC=${CC:-cc}
mkdir -p "$OUT"
printf 'int main(void) { return sizeof(void *) != 4; }\n' > "$OUT/probe.c"
probe() { "$CC" -m32 -o "$OUT/probe" "$OUT/probe.c" 2>/dev/null && "$OUT/probe"; }
if ! probe && [ "$(id -u)" = 0 ] && [ "${MP32_APT_INSTALL:-1}" = 1 ]; then
    # root on a Debian machine (as CI is): install the toolchain, as a person would be told to
    echo "mp32: apt-get install gcc-multilib (a 32-bit C toolchain; MP32_APT_INSTALL=0 skips this)"
    { apt-get install -y -qq gcc-multilib || { apt-get update -qq && apt-get install -y -qq gcc-multilib; }; } \
        >"$OUT/apt-install.log" 2>&1 || true
fi
probe || fail "no 32-bit C toolchain (apt-get install gcc-multilib)"

SRC="$OUT/src"
MP="$SRC/micropython-${MP_VERSION%+ds-*}"
if [ ! -f "$MP/.unpacked" ]; then
    # 1. the source packages, through a private apt configuration
    [ -f "$KEYRING" ] || fail "no $KEYRING (apt-get install debian-archive-keyring)"
    MIRROR=$(apt-cache policy 2>/dev/null | awk '/ Packages$/ && $3 ~ /\/main$/ && $2 !~ /security/ { print $2; exit }')
    [ -n "$MIRROR" ] || fail "no Debian mirror in the machine's apt sources (run apt-get update first)"
    APT="$OUT/apt"
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$SRC"
    : > "$APT/sources.list"
    for suite in $SUITES; do
        echo "deb-src [signed-by=$KEYRING] $MIRROR $suite main" >> "$APT/sources.list"
    done
    set -- -o APT::Sandbox::User=root -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null \
           -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache"
    echo "mp32: apt-get source micropython=$MP_VERSION mbedtls=$MBEDTLS_VERSION from $MIRROR ($SUITES)"
    apt-get "$@" -qq update || fail "apt-get update of $APT/sources.list failed"
    (cd "$SRC" && apt-get "$@" -qq source --download-only \
        "micropython=$MP_VERSION" "mbedtls=$MBEDTLS_VERSION") \
        || fail "apt-get source failed: is micropython $MP_VERSION still in $SUITES? (apt-cache $* showsrc micropython)"
    # 2. unpack, mbedTLS into lib/mbedtls, Debian's patch for the missing submodule
    rm -rf "$MP" "$SRC/debian"
    (cd "$SRC" && tar xf micropython_"${MP_VERSION%-*}".orig.tar.* && tar xf micropython_"$MP_VERSION".debian.tar.*)
    mkdir -p "$MP/lib/mbedtls"
    tar xf "$SRC"/mbedtls_"${MBEDTLS_VERSION%-*}".orig.tar.* -C "$MP/lib/mbedtls" --strip-components=1
    patch -s -d "$MP" -p1 < "$SRC"/debian/patches/0007-py-mkrules.mk-Workaround-missing-submodules-dir.patch
    touch "$MP/.unpacked"
fi

# 3. build, 4. only when the inputs differ from those the binary was built from
export GIT_CEILING_DIRECTORIES="$SRC"  # the version string is MicroPython's, not this repository's commit
JOBS=$(nproc 2>/dev/null || echo 2)
make -s -C "$MP/mpy-cross" -j"$JOBS" >"$OUT/mpy-cross.log" 2>&1 \
    || fail "mpy-cross did not build: see $OUT/mpy-cross.log"
# Everything that decides the C objects, given both to make and to the digest.
MAKE_FLAGS="VARIANT=standard MICROPY_FORCE_32BIT=1 MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_SSL_MBEDTLS=1 CFLAGS_EXTRA=-DMICROPY_FLOAT_USE_NATIVE_FLT16=0"
INPUTS="python3 $REPO/host_tools/bench/build_inputs.py"
WANT=$OUT/$(basename "$BIN").want.json
# shellcheck disable=SC2086  # MAKE_FLAGS: one setting a word
set -- $(for f in $MAKE_FLAGS; do printf -- '--setting %s ' "$f"; done)
$INPUTS want --mp-dir "$MP" --manifest "$MANIFEST" --repo "$REPO" "$@" \
    --setting "micropython=$MP_VERSION" --setting "mbedtls=$MBEDTLS_VERSION" \
    --setting "patch=0007-py-mkrules.mk-Workaround-missing-submodules-dir.patch" \
    --setting "cc=$CC: $("$CC" --version 2>/dev/null | head -n 1)" >"$WANT.tmp" 2>"$WANT.err" \
    && mv "$WANT.tmp" "$WANT" || fail "$(tail -n 1 "$WANT.err")"
decide() { $INPUTS decide "$WANT" "$1/inputs.json" "$BIN.json" "$BIN"; }
DECISION=$(decide "$UNIX") || fail "could not compare the inputs: $DECISION"
case "$DECISION" in
    current)
        echo "$BIN"; exit 0 ;;
    rebuild*)
        echo "$NAME: ${DECISION#rebuild: }: building the objects again" >&2
        rm -rf "$UNIX" ;;
esac
if [ "$STOCK" = 1 ] && [ ! -d "$UNIX" ] && [ -f "$OUT/unix/micropython" ] \
        && [ "$(decide "$OUT/unix" | cut -d: -f1)" != rebuild ]; then
    # the frozen build's objects (same sources, flags, compiler), timestamps kept, less what it
    # froze (a copy, not links: the compiler rewrites frozen_content.o in place)
    rm -rf "$UNIX.tmp"
    cp -a "$OUT/unix" "$UNIX.tmp" && rm -rf "$UNIX.tmp/frozen_mpy" "$UNIX.tmp"/frozen_content.* \
        "$UNIX.tmp/micropython" && mv "$UNIX.tmp" "$UNIX" || fail "could not copy $OUT/unix to $UNIX"
fi
# Freeze from the files as they are: makemanifest.py skips a module whose .mpy is newer than
# its source and keeps frozen_content.c when nothing is newer, whatever the content.
rm -rf "$UNIX/frozen_mpy" "$UNIX"/frozen_content.* "$UNIX/micropython" "$UNIX/inputs.json" "$BIN.json"
# shellcheck disable=SC2086
make -C "$MP/ports/unix" -j"$JOBS" BUILD="$UNIX" $MAKE_FLAGS FROZEN_MANIFEST="$MANIFEST" >"$LOG" 2>&1 \
    || fail "ports/unix did not build: see $LOG"
# copy, then rename: a running bench or test may be executing the previous binary
cp "$UNIX/micropython" "$BIN.tmp" && mv -f "$BIN.tmp" "$BIN"
cp "$MP/mpy-cross/build/mpy-cross" "$OUT/mpy-cross.tmp" && mv -f "$OUT/mpy-cross.tmp" "$OUT/mpy-cross"
# the record last: a build that stops half way leaves none, so the next run builds again
cp "$WANT" "$UNIX/inputs.json" && cp "$WANT" "$BIN.json.tmp" && mv -f "$BIN.json.tmp" "$BIN.json"
echo "$BIN"
