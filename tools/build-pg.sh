#!/usr/bin/env bash
#
# tools/build-pg.sh — build PostgreSQL 15 with assertions (--enable-cassert,
# --enable-debug) and Valgrind client requests (-DUSE_VALGRIND) from Debian's
# source package of the installed postgresql-15, into a cached folder, so that
# the test suite can run against it:
#
#   bash tools/build-pg.sh                 # prints the pg_config of the build
#   PE_NO_SYSTEM_INSTALL=1 PE_PG_CONFIG=/work/cache/pg15-cassert/bin/pg_config \
#       bash tools/run test
#   bash tools/valgrind-regress.sh         # pg_regress under valgrind
#
# The source comes through an apt configuration of its own (sources list,
# lists and cache under $PE_PG_CACHE/apt): the system's apt state is never
# read or written.  Idempotent: a finished build of the same version and
# options is reused (stamp file PREFIX/.pe-build); the last line printed is
# the path of its pg_config.
#
# Environment:
#   PE_PG_CACHE    cache folder (default /work/cache)
#   PE_PG_PREFIX   install prefix (default $PE_PG_CACHE/pg15-cassert)
#   PE_PG_VERSION  Debian version of postgresql-15 to build (default: the
#                  installed one, dpkg-query -W postgresql-15)
#   PE_PG_JOBS     make -j (default 2)
#
# Other major versions (the test matrix, README "Supported versions"):
#
#   bash tools/build-pg.sh 18              # prints the pg_config of the build
#   bash tools/run test --pg 18            # builds it on first use
#
# builds the Debian source package pinned for that major in tools/pg-versions
# (fetched from the suite that carries it: sid, trixie, ...) as a plain
# production-like build (-O2, --enable-debug, --with-openssl --with-libxml
# (query_to_xml: vault_rotate_all.sh), no assertions; PE_PG_CASSERT=1
# adds --enable-cassert) of the server, the client programs, pg_upgrade,
# pg_regress and contrib/pgcrypto into $PE_PG_CACHE/pgMAJOR-VERSION, plus
# the system's pgTAP SQL files.  Only the Debian source package is used,
# never its binaries (trixie's and sid's need a newer glibc than Debian 12).
# The compile runs under nice -n 10 (the machine is shared).  A major
# without a Debian source package (16) builds from PE_PG16_SRC, a
# PostgreSQL source tree of that major, when given.
#
set -Eeuo pipefail

if [ $# -gt 0 ]; then
	exec bash "$(dirname "${BASH_SOURCE[0]}")/build-pg-major.sh" "$@"
fi

CACHE=${PE_PG_CACHE:-/work/cache}
PREFIX=${PE_PG_PREFIX:-$CACHE/pg15-cassert}
JOBS=${PE_PG_JOBS:-2}
VERSION=${PE_PG_VERSION:-$(dpkg-query -W -f='${Version}' postgresql-15)}
UPSTREAM=${VERSION%%-*}
CFLAGS_BUILD='-O2 -g -fno-omit-frame-pointer'
CPPFLAGS_BUILD='-DUSE_VALGRIND'
# --libdir names "postgresql": Debian's 50-per-version-dirs.patch otherwise
# puts pkglibdir at /usr/lib/postgresql/15/lib, the system's own folder.
CONFIGURE=(--prefix="$PREFIX" --libdir="$PREFIX/lib/postgresql" --enable-cassert --enable-debug --with-openssl)
STAMP="postgresql-15 $VERSION ${CONFIGURE[*]} CFLAGS=$CFLAGS_BUILD CPPFLAGS=$CPPFLAGS_BUILD"

log() { printf '%s\n' "tools/build-pg.sh: $*" >&2; }

if [ -x "$PREFIX/bin/pg_config" ] && [ -f "$PREFIX/.pe-build" ] &&
	[ "$(head -1 "$PREFIX/.pe-build")" = "$STAMP" ]; then
	log "PostgreSQL $(sed -n 2p "$PREFIX/.pe-build") (cassert) already built in $PREFIX"
	echo "$PREFIX/bin/pg_config"
	exit 0
fi

# --- source, through an apt configuration of our own -----------------------
APT="$CACHE/apt"
SRC="$CACHE/src/postgresql-15-$VERSION"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$SRC"
cat >"$APT/sources.list" <<'EOF'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOF
APT_OPTS=(
	-o Dir::Etc::SourceList="$APT/sources.list"
	-o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$APT/lists"
	-o Dir::Cache="$APT/cache"
	-o Dir::State::status=/dev/null
	-o APT::Sandbox::User=root
)
fetch_source() { # VERSION: Debian's source package into $CACHE/src/postgresql-15-VERSION
	local v=$1 dir="$CACHE/src/postgresql-15-$1"
	mkdir -p "$dir"
	find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'postgresql-15-*' | grep -q . && return 0
	(cd "$dir" && apt-get "${APT_OPTS[@]}" -qq source "postgresql-15=$v" >/dev/null 2>"$dir/apt.err") || {
		log "apt-get source postgresql-15=$v failed: $(grep -m1 'E:' "$dir/apt.err" || true)"
		rm -rf "$dir"
		return 1
	}
}
if ! compgen -G "$SRC/postgresql-15-*/configure" >/dev/null; then
	log "fetching Debian source package postgresql-15=$VERSION"
	apt-get "${APT_OPTS[@]}" -qq update
	if ! fetch_source "$VERSION"; then
		# The archive may list a version whose files it no longer (or not
		# yet) serves: fall back to the newest 15.x source it does serve,
		# and say so.
		fallback=
		for v in $(apt-cache "${APT_OPTS[@]}" showsrc postgresql-15 |
			sed -n 's/^Version: //p' | sort -u -r -V); do
			[ "$v" = "$VERSION" ] && continue
			if fetch_source "$v"; then fallback=$v; break; fi
		done
		[ -n "$fallback" ] || { log "no postgresql-15 source package could be fetched"; exit 1; }
		log "WARNING: the source of the installed $VERSION is not served; building $fallback instead"
		VERSION=$fallback
		SRC="$CACHE/src/postgresql-15-$VERSION"
	fi
fi
tree=$(find "$SRC" -mindepth 1 -maxdepth 1 -type d -name 'postgresql-15-*' | head -1)
log "source: $tree"

# --- build (out of tree, so a rebuild with other options starts clean) ------
BUILD="$CACHE/build/postgresql-15-$VERSION-cassert"
rm -rf "$BUILD" "$PREFIX"
mkdir -p "$BUILD"
cd "$BUILD"
log "configure ${CONFIGURE[*]}"
"$tree/configure" "${CONFIGURE[@]}" CFLAGS="$CFLAGS_BUILD" CPPFLAGS="$CPPFLAGS_BUILD" \
	>"$BUILD/configure.log" 2>&1 || { tail -50 "$BUILD/configure.log"; exit 1; }
log "make -j$JOBS (log: $BUILD/make.log)"
make -j"$JOBS" -s >"$BUILD/make.log" 2>&1 || { tail -50 "$BUILD/make.log"; exit 1; }
# install into a staging folder first, and refuse anything outside PREFIX:
# nothing of this build may ever land in the system's folders
DEST="$BUILD/destdir"
rm -rf "$DEST"
make -s install DESTDIR="$DEST" >>"$BUILD/make.log" 2>&1 || { tail -50 "$BUILD/make.log"; exit 1; }
outside=$(cd "$DEST" && find . \( -type f -o -type l \) ! -path ".$PREFIX/*" | head -5)
if [ -n "$outside" ]; then
	log "refusing to install: files outside $PREFIX: $outside"
	exit 1
fi
mkdir -p "$PREFIX"
cp -a "$DEST$PREFIX/." "$PREFIX/"
rm -rf "$DEST"
# Valgrind's suppressions for the server, next to the install
cp "$tree/src/tools/valgrind.supp" "$PREFIX/valgrind.supp"
# pgTAP is SQL only: the test suite's pgTAP files come from the system's
# postgresql-15-pgtap package
sysshare=$(/usr/lib/postgresql/15/bin/pg_config --sharedir 2>/dev/null || true)
if [ -n "$sysshare" ] && compgen -G "$sysshare/extension/pgtap*" >/dev/null; then
	cp "$sysshare"/extension/pgtap* "$("$PREFIX/bin/pg_config" --sharedir)/extension/"
fi
chmod -R a+rX "$PREFIX"
printf '%s\n%s\n' "$STAMP" "$VERSION" >"$PREFIX/.pe-build"
log "PostgreSQL $VERSION with --enable-cassert installed in $PREFIX"
echo "$PREFIX/bin/pg_config"
