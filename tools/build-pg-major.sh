#!/usr/bin/env bash
#
# tools/build-pg-major.sh MAJOR — build PostgreSQL MAJOR from the Debian
# source package pinned in tools/pg-versions into a cached prefix keyed by
# the exact version; the last line printed is its pg_config.  Called as
# "tools/build-pg.sh MAJOR" (see there and README "Supported versions").
#
# Environment:
#   PE_PG_CACHE    cache folder (default /work/cache)
#   PE_PG_JOBS     make -j (default 2)
#   PE_PG_CASSERT  1: --enable-cassert (prefix gets a -cassert suffix)
#   PE_PG16_SRC    a PostgreSQL 16 source tree (no Debian suite has 16)
#
set -Eeuo pipefail

MAJOR=${1:?usage: build-pg.sh MAJOR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PE_PG_CACHE:-/work/cache}
JOBS=${PE_PG_JOBS:-2}
log() { printf '%s\n' "tools/build-pg.sh: $*" >&2; }

read -r _ PKG VERSION SUITE METHOD < <(awk -v m="$MAJOR" '$1 == m' "$HERE/pg-versions") || {
	log "major $MAJOR is not listed in tools/pg-versions"
	exit 1
}
if [ "$VERSION" = system ]; then
	# the system's own installation (Debian 12's postgresql-15)
	pgc=/usr/lib/postgresql/$MAJOR/bin/pg_config
	[ -x "$pgc" ] || { log "postgresql-$MAJOR is not installed (tools/run installs it)"; exit 1; }
	echo "$pgc"
	exit 0
fi

if [ "${METHOD:-source}" = binary ]; then
	exec bash "$HERE/pg-binaries.sh" "$MAJOR" "$PKG" "$VERSION" "$SUITE"
fi

FLAVOUR=
CONFIGURE_EXTRA=()
if [ "${PE_PG_CASSERT:-0}" = 1 ]; then
	FLAVOUR=-cassert
	CONFIGURE_EXTRA=(--enable-cassert)
fi
CFLAGS_BUILD='-O2 -g'

APT="$CACHE/apt-pg"
APT_OPTS=(
	-o Dir::Etc::SourceList="$APT/sources.list"
	-o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$APT/lists"
	-o Dir::Cache="$APT/cache"
	-o Dir::State::status=/dev/null
	-o APT::Sandbox::User=root
)

if [ "$VERSION" = none ]; then
	# No Debian suite carries this major: a source tree given by hand.
	var=PE_PG${MAJOR}_SRC
	tree=${!var:-}
	if [ -z "$tree" ] || [ ! -x "$tree/configure" ]; then
		log "no Debian source package of PostgreSQL $MAJOR exists in any suite; set $var to a PostgreSQL $MAJOR source tree"
		exit 3
	fi
	VERSION=$(sed -n "s/^PACKAGE_VERSION='\\([^']*\\)'.*/\\1/p" "$tree/configure")
	case $VERSION in "$MAJOR".*) ;; *) log "$var is PostgreSQL '$VERSION', not $MAJOR"; exit 1 ;; esac
	VERSION=$VERSION-src
else
	tree=
fi

PREFIX=${PE_PG_PREFIX:-$CACHE/pg$MAJOR-$VERSION$FLAVOUR}
CONFIGURE=(--prefix="$PREFIX" --libdir="$PREFIX/lib/postgresql" --enable-debug --with-openssl --with-libxml "${CONFIGURE_EXTRA[@]}")
STAMP="$PKG $VERSION ${CONFIGURE[*]} CFLAGS=$CFLAGS_BUILD"

if [ -x "$PREFIX/bin/pg_config" ] && [ -f "$PREFIX/.pe-build" ] &&
	[ "$(head -1 "$PREFIX/.pe-build")" = "$STAMP" ]; then
	log "PostgreSQL $(sed -n 2p "$PREFIX/.pe-build") already built in $PREFIX"
	echo "$PREFIX/bin/pg_config"
	exit 0
fi

# --- source: Debian's source package, through an apt configuration of our own
if [ -z "$tree" ]; then
	mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
	# every suite that carries a major of ours; deb-src only: the binaries
	# of trixie and sid need a newer glibc than Debian 12's
	cat >"$APT/sources.list" <<'LIST'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
LIST
	fetch_source() { # VERSION -> $CACHE/src/PKG-VERSION
		local v=$1 dir="$CACHE/src/$PKG-$1"
		if compgen -G "$dir/$PKG-*/configure" >/dev/null; then return 0; fi
		rm -rf "$dir"
		mkdir -p "$dir"
		(cd "$dir" && apt-get "${APT_OPTS[@]}" -qq source "$PKG=$v" >/dev/null 2>"$dir/apt.err") || {
			log "apt-get source $PKG=$v failed: $(grep -m1 'E:' "$dir/apt.err" || true)"
			rm -rf "$dir"
			return 1
		}
	}
	SRC="$CACHE/src/$PKG-$VERSION"
	if ! compgen -G "$SRC/$PKG-*/configure" >/dev/null; then
		log "fetching Debian source package $PKG=$VERSION ($SUITE)"
		apt-get "${APT_OPTS[@]}" -qq update
		if ! fetch_source "$VERSION"; then
			fallback=
			for v in $(apt-cache "${APT_OPTS[@]}" showsrc "$PKG" | sed -n 's/^Version: //p' | sort -u -r -V); do
				[ "$v" = "$VERSION" ] && continue
				if fetch_source "$v"; then fallback=$v; break; fi
			done
			[ -n "$fallback" ] || { log "no $PKG source package could be fetched"; exit 1; }
			log "WARNING: the pinned $PKG $VERSION is no longer served; building $fallback instead (update tools/pg-versions)"
			VERSION=$fallback
			SRC="$CACHE/src/$PKG-$VERSION"
			PREFIX=${PE_PG_PREFIX:-$CACHE/pg$MAJOR-$VERSION$FLAVOUR}
			CONFIGURE=(--prefix="$PREFIX" --libdir="$PREFIX/lib/postgresql" --enable-debug --with-openssl --with-libxml "${CONFIGURE_EXTRA[@]}")
			STAMP="$PKG $VERSION ${CONFIGURE[*]} CFLAGS=$CFLAGS_BUILD"
		fi
	fi
	tree=$(find "$SRC" -mindepth 1 -maxdepth 1 -type d -name "$PKG-*" | head -1)
fi
log "source: $tree"

# --- build (out of tree), only what the tests need ----------------------------
# the tools a source build needs, from the system's own suite (bookworm)
BUILD_DEPS=(bison flex gcc make libssl-dev libxml2-dev libreadline-dev zlib1g-dev libicu-dev pkg-config)
missing=()
for p in "${BUILD_DEPS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
BUILD="$CACHE/build/pg$MAJOR-$VERSION$FLAVOUR"
rm -rf "$BUILD" "$PREFIX"
mkdir -p "$BUILD"
cd "$BUILD"
log "configure ${CONFIGURE[*]} (log: $BUILD/configure.log)"
nice -n 10 "$tree/configure" "${CONFIGURE[@]}" CFLAGS="$CFLAGS_BUILD" \
	>"$BUILD/configure.log" 2>&1 || { tail -50 "$BUILD/configure.log"; exit 1; }
log "make -j$JOBS (log: $BUILD/make.log; about 8 minutes on 2 cores)"
# the top level builds src/ (server, client programs, pg_upgrade, pg_regress)
# and config/; of contrib only pgcrypto (bench/vault.sh)
{ nice -n 10 make -j"$JOBS" -s &&
	nice -n 10 make -j"$JOBS" -s -C contrib/pgcrypto; } >"$BUILD/make.log" 2>&1 ||
	{ tail -50 "$BUILD/make.log"; exit 1; }
DEST="$BUILD/destdir"
rm -rf "$DEST"
{ make -s install DESTDIR="$DEST" && make -s -C contrib/pgcrypto install DESTDIR="$DEST"; } \
	>>"$BUILD/make.log" 2>&1 || { tail -50 "$BUILD/make.log"; exit 1; }
outside=$(cd "$DEST" && find . \( -type f -o -type l \) ! -path ".$PREFIX/*" | head -5)
if [ -n "$outside" ]; then
	log "refusing to install: files outside $PREFIX: $outside"
	exit 1
fi
mkdir -p "$PREFIX"
cp -a "$DEST$PREFIX/." "$PREFIX/"
rm -rf "$DEST"
# pgTAP is SQL only (its functions are plpgsql/SQL; nothing compiled): the
# same files as the system's postgresql-15-pgtap package
sysshare=$(/usr/lib/postgresql/15/bin/pg_config --sharedir 2>/dev/null || true)
if [ -n "$sysshare" ] && compgen -G "$sysshare/extension/pgtap*" >/dev/null; then
	cp "$sysshare"/extension/pgtap* "$("$PREFIX/bin/pg_config" --sharedir)/extension/"
else
	log "WARNING: postgresql-15-pgtap is not installed: no pgTAP in $PREFIX"
fi
chmod -R a+rX "$PREFIX"
printf '%s\n%s\n' "$STAMP" "$VERSION" >"$PREFIX/.pe-build"
log "PostgreSQL $VERSION installed in $PREFIX"
echo "$PREFIX/bin/pg_config"
