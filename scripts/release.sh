#!/bin/sh
# Builds a mayu release into $DIST (`make release`; README "Installing from
# a release"):
#   mayu-linux-ARCH, mayuctl-linux-ARCH   static, stripped binaries
#   mayu_DEBVERSION_ARCH.deb               a Debian package per architecture
#   oci/                                   an OCI image layout: one index over
#                                          the architectures, reference VERSION
#   mayu_VERSION_oci.tar                   that layout as a tar (oci-archive)
#   SHA256SUMS                             sha256sum of each file above
# Environment: VERSION (default: git describe), ARCHES (default: amd64
# arm64), DIST (default: dist), GO, DEB_COMPRESSION, SOURCE_DATE_EPOCH (default: the time of
# the last commit; every file and the image carry it, so a release is
# reproducible). Needs dpkg-deb; no container daemon.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
umask 022

GO=${GO:-go}
VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
ARCHES=${ARCHES:-amd64 arm64}
DIST=${DIST:-dist}
# gzip builds faster (the tests use it); xz makes the smaller package.
DEB_COMPRESSION=${DEB_COMPRESSION:-xz}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

# A Debian version starts with a digit and, in a native package, has no
# hyphen: v0.2.0 → 0.2.0, v0.2.0-3-gabc → 0.2.0+3+gabc, an untagged
# c004b1e (or 1d3bc4f: no dot, not a release) → 0~c004b1e, which sorts
# before any tagged release.
debversion=${VERSION#v}
case $debversion in
[0-9]*.*) ;;
*) debversion="0~$debversion" ;;
esac
debversion=$(printf '%s' "$debversion" | tr -- - +)

command -v dpkg-deb >/dev/null || { echo "release: dpkg-deb missing (package dpkg)" >&2; exit 1; }
mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$DIST/oci"
rm -f "$DIST"/mayu-linux-* "$DIST"/mayuctl-linux-* "$DIST"/mayu_*.deb "$DIST"/mayu_*_oci.tar "$DIST/SHA256SUMS"

# Static (no cgo: runs on any Linux of its architecture, and in an image
# without a libc), without local paths or symbols, stamped with VERSION.
build() { # ARCH PROG OUT
	CGO_ENABLED=0 GOOS=linux GOARCH=$1 $GO build -trimpath \
		-ldflags "-s -w -X main.version=$VERSION" -o "$3" "./cmd/$2"
}
for arch in $ARCHES; do
	for prog in mayu mayuctl; do
		echo "release: $prog linux/$arch"
		build "$arch" "$prog" "$DIST/$prog-linux-$arch"
	done
done

# Completions and the man page come from the command tree of a mayuctl
# that runs here, whatever the release's architectures.
# The builder's MAYU_* variables would become the page's defaults.
build "$($GO env GOARCH)" mayuctl "$work/mayuctl"
mkdir -p "$work/gen"
mayuctl() { env -u MAYU_SERVER -u MAYU_TOKEN_FILE -u MAYU_TOKEN -u MAYU_CACERT -u MAYU_CERT -u MAYU_KEY "$work/mayuctl" "$@"; }
mayuctl completion bash >"$work/gen/mayuctl.bash"
mayuctl completion zsh >"$work/gen/_mayuctl"
mayuctl completion fish >"$work/gen/mayuctl.fish"
mayuctl man >"$work/gen/mayuctl.1"

deb() { # ARCH
	arch=$1
	root=$work/deb-$arch
	rm -rf "$root"
	install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
		"$root/etc/mayu/templates" "$root/usr/share/doc/mayu" \
		"$root/usr/share/bash-completion/completions" \
		"$root/usr/share/zsh/vendor-completions" \
		"$root/usr/share/fish/vendor_completions.d" \
		"$root/usr/share/man/man1" "$root/usr/share/man/man8" \
		"$root/usr/share/mayu/files" "$root/usr/share/mayu/boot"
	install -m 0755 "$DIST/mayu-linux-$arch" "$root/usr/bin/mayu"
	install -m 0755 "$DIST/mayuctl-linux-$arch" "$root/usr/bin/mayuctl"
	# The unit as the repository has it, with the packaged binary's path
	# and the package's own first comment (how to start it).
	{
		cat packaging/debian/unit-header
		sed -e '1,/^\[Unit\]/{/^\[Unit\]/!d}' -e 's#/usr/local/bin/#/usr/bin/#g' systemd/mayu.service
	} >"$root/lib/systemd/system/mayu.service"
	chmod 0644 "$root/lib/systemd/system/mayu.service"
	# The configuration skeleton (conffiles: an upgrade keeps the
	# operator's edits). The admin tokens file is the operator's: it holds
	# secrets and is not shipped.
	install -m 0644 etc/mayu.yaml "$root/etc/mayu/mayu.yaml"
	install -m 0644 etc/templates/* "$root/etc/mayu/templates/"
	# Docs.
	install -m 0644 README.md docs/*.md packaging/debian/copyright "$root/usr/share/doc/mayu/"
	gzip -9n <CHANGELOG.md >"$root/usr/share/doc/mayu/CHANGELOG.md.gz"
	# A native package's changelog.gz is in Debian's format: one entry
	# that points at the project's own.
	{
		printf 'mayu (%s) unstable; urgency=medium\n\n' "$debversion"
		printf '  * Release %s: see /usr/share/doc/mayu/CHANGELOG.md.gz.\n\n' "$VERSION"
		printf ' -- mayu maintainers <maintainers@mayu-boot.org>  %s\n' "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
	} | gzip -9n >"$root/usr/share/doc/mayu/changelog.gz"
	install -d "$root/usr/share/lintian/overrides"
	install -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/mayu"
	install -m 0644 "$work/gen/mayuctl.bash" "$root/usr/share/bash-completion/completions/mayuctl"
	install -m 0644 "$work/gen/_mayuctl" "$root/usr/share/zsh/vendor-completions/_mayuctl"
	install -m 0644 "$work/gen/mayuctl.fish" "$root/usr/share/fish/vendor_completions.d/mayuctl.fish"
	gzip -9n <packaging/debian/mayu.8 >"$root/usr/share/man/man8/mayu.8.gz"
	gzip -9n <"$work/gen/mayuctl.1" >"$root/usr/share/man/man1/mayuctl.1.gz"
	# Maintainer scripts and metadata.
	install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
	(cd "$root" && find etc -type f | sort | sed 's#^#/#') >"$root/DEBIAN/conffiles"
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort | xargs md5sum) >"$root/DEBIAN/md5sums"
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
		packaging/debian/control.in >"$root/DEBIAN/control"
	chmod 0644 "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group "-Z$DEB_COMPRESSION" --build "$root" "$DIST/mayu_${debversion}_$arch.deb" >/dev/null
	echo "release: $DIST/mayu_${debversion}_$arch.deb"
}
for arch in $ARCHES; do
	deb "$arch"
done

# The image, built by packaging/oci (a module of its own: its
# go-containerregistry stays out of mayu's go.mod).
arches=$(echo $ARCHES | tr ' ' ,)
(cd packaging/oci && $GO run . -version "$VERSION" -arch "$arches" \
	-binaries "$DIST/%s-linux-%s" -etc "$top/etc" -epoch "$SOURCE_DATE_EPOCH" \
	-layout "$DIST/oci" -archive "$DIST/mayu_${VERSION}_oci.tar")
echo "release: $DIST/oci (oci:$DIST/oci:$VERSION), $DIST/mayu_${VERSION}_oci.tar"

(cd "$DIST" && sha256sum mayu-linux-* mayuctl-linux-* mayu_*.deb mayu_*_oci.tar >SHA256SUMS)
echo "release: $DIST/SHA256SUMS"
