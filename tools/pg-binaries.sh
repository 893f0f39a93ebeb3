#!/usr/bin/env bash
#
# tools/pg-binaries.sh MAJOR PACKAGE VERSION SUITE — PostgreSQL MAJOR from
# Debian's binary packages of SUITE (trixie), for a major whose source
# package the registry does not serve (postgresql-17: its .dsc and
# orig.tar answer 404 while the .debs are served).  Called by
# tools/build-pg.sh MAJOR for a "binary" line of tools/pg-versions.
#
# trixie's binaries need trixie's glibc (2.41; Debian 12 has 2.36): the
# packages and every library they need are unpacked (dpkg-deb -x, never
# installed) into $PE_PG_CACHE/pgMAJOR-SUITE-VERSION, and each PostgreSQL
# program and module is pointed at that folder's own dynamic loader and
# libraries (patchelf: interpreter + DT_RPATH, which also applies to the
# libraries a module loads, such as payment_ext.so's libcurl).  The
# system's libraries and apt state are not touched.  Extensions built
# against it with Debian 12's compiler see trixie's pg_config.h, which says
# strlcpy/strlcat are declared (glibc 2.38+); Debian 12's <string.h> does
# not declare them: pgxs's Makefile.global gets -include of a header that
# declares them (the running glibc has them).  The last line printed is
# the pg_config.
#
set -Eeuo pipefail

MAJOR=$1 PKG=$2 VERSION=$3 SUITE=$4
CACHE=${PE_PG_CACHE:-/work/cache}
R=$CACHE/pg$MAJOR-$SUITE-$VERSION
STAMP="binary $PKG $VERSION $SUITE v2"
log() { printf '%s\n' "tools/build-pg.sh: $*" >&2; }

if [ -x "$R/usr/lib/postgresql/$MAJOR/bin/pg_config" ] && [ -f "$R/.pe-build" ] &&
	[ "$(head -1 "$R/.pe-build")" = "$STAMP" ]; then
	log "PostgreSQL $VERSION ($SUITE binaries) already unpacked in $R"
	echo "$R/usr/lib/postgresql/$MAJOR/bin/pg_config"
	exit 0
fi
command -v patchelf >/dev/null || {
	log "installing patchelf"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends patchelf >/dev/null
}

APT="$CACHE/apt-pg-bin-$SUITE"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
cat >"$APT/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security $SUITE-security main
LIST
APT_OPTS=(
	-o Dir::Etc::SourceList="$APT/sources.list"
	-o Dir::Etc::SourceParts=/dev/null
	-o Dir::Etc::preferences=/dev/null
	-o Dir::Etc::PreferencesParts=/dev/null
	-o Dir::State::Lists="$APT/lists"
	-o Dir::Cache="$APT/cache"
	-o Dir::State::status=/dev/null
	-o Debug::NoLocking=1
	-o APT::Sandbox::User=root
)
log "downloading $PKG=$VERSION and its libraries from $SUITE (no install)"
apt-get "${APT_OPTS[@]}" -qq update
rm -f "$APT/cache/archives/"*.deb
# the server, psql/pg_dump/pg_restore, headers + pgxs + pg_regress, and the
# libraries payment_ext.so itself links (libcurl)
apt-get "${APT_OPTS[@]}" -y -qq --download-only --no-install-recommends install \
	"$PKG=$VERSION" "postgresql-client-$MAJOR=$VERSION" "postgresql-server-dev-$MAJOR=$VERSION" \
	libcurl4t64 >/dev/null

rm -rf "$R"
mkdir -p "$R"
for d in "$APT/cache/archives/"*.deb; do
	case $(basename "$d") in
	# compilers, perl and LLVM (JIT only; tests run with jit off by default
	# in a build without llvmjit loaded) are not needed to run the server
	libllvm* | perl* | libperl* | gcc* | cpp* | clang* | libclang* | llvm* | binutils* | libbinutils* | \
		libc6-dev* | libc-dev-bin* | linux-libc-dev* | lib*-dev_*) continue ;;
	esac
	dpkg-deb -x "$d" "$R"
done
rm -f "$APT/cache/archives/"*.deb

L=$R/usr/lib/x86_64-linux-gnu
P=$R/usr/lib/postgresql/$MAJOR
[ -e "$L/ld-linux-x86-64.so.2" ] || { log "no dynamic loader in $L"; exit 1; }
for f in "$P"/bin/* "$P"/lib/*.so "$P"/lib/pgxs/src/test/regress/pg_regress; do
	[ -L "$f" ] && continue
	file -b "$f" | grep -q ELF || continue
	if file -b "$f" | grep -q interpreter; then
		patchelf --set-interpreter "$L/ld-linux-x86-64.so.2" "$f"
	fi
	patchelf --force-rpath --set-rpath "$L" "$f"
done
# llvmjit.so would need libLLVM: without it the server runs with jit off
rm -f "$P/lib/llvmjit.so" "$P/lib/llvmjit_types.bc"

# the strlcpy/strlcat declarations Debian 12's <string.h> lacks
cat >"$R/pe-bookworm-compat.h" <<'H'
/* tools/pg-binaries.sh: trixie's pg_config.h says strlcpy/strlcat are
 * declared by <string.h> (glibc 2.38+); Debian 12's is older. */
#include <stddef.h>
extern size_t strlcpy(char *dst, const char *src, size_t siz);
extern size_t strlcat(char *dst, const char *src, size_t siz);
H
sed -i "s|^CPPFLAGS = |CPPFLAGS = -include $R/pe-bookworm-compat.h |" "$P/lib/pgxs/src/Makefile.global"
# no LLVM here (JIT removed above): no bitcode for the extension either
sed -i 's|^with_llvm\t*=.*|with_llvm\t= no|; s|^with_llvm = .*|with_llvm = no|' "$P/lib/pgxs/src/Makefile.global"

# pgTAP (SQL only) from the system's postgresql-15-pgtap
if compgen -G "/usr/share/postgresql/15/extension/pgtap*" >/dev/null; then
	cp /usr/share/postgresql/15/extension/pgtap* "$R/usr/share/postgresql/$MAJOR/extension/"
else
	log "WARNING: postgresql-15-pgtap is not installed: no pgTAP in $R"
fi
"$P/bin/postgres" --version >/dev/null || { log "the unpacked server does not run"; exit 1; }
chmod -R a+rX "$R"
printf '%s\n%s\n' "$STAMP" "$VERSION" >"$R/.pe-build"
log "PostgreSQL $VERSION ($SUITE binaries) unpacked in $R"
echo "$P/bin/pg_config"
