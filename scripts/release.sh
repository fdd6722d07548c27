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

# debversion VERSION: its Debian spelling. A Debian version starts with a
# digit and, in a native package, has no hyphen: v0.2.0 → 0.2.0,
# v0.2.0-3-gabc → 0.2.0+3+gabc (after 0.2.0). A pre-release (-rcN, -alpha,
# -beta, -pre) takes "~", which sorts before everything, so the release
# candidate comes before its release: v0.2.0-rc1 → 0.2.0~rc1,
# v0.2.0-rc1-3-gabc → 0.2.0~rc1+3+gabc (between the two). An untagged
# c004b1e (or 1d3bc4f: no dot, not a release) → 0~c004b1e, which sorts
# before any tagged release. packaging/release_test.go checks the order with
# dpkg --compare-versions.
debversion() {
	v=${1#v}
	case $v in
	[0-9]*.*) ;;
	*) v="0~$v" ;;
	esac
	printf '%s\n' "$v" | sed -E 's/^([0-9][^-]*)-(rc|alpha|beta|pre)/\1~\2/' | tr -- - +
}
if [ "${1:-}" = --debversion ]; then
	debversion "$2"
	exit 0
fi
debversion=$(debversion "$VERSION")

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

# The packaged configuration: etc/mayu.yaml with the files mayu serves
# under /srv/mayu (site data this host serves, FHS), where the package's
# postinst makes the directories and copies the templates, and the image
# carries them. Both files_dir and boot_files_dir must be replaced.
sed -e 's#^  files_dir: /usr/share/mayu/files$#  \# Debian package and image: /srv/mayu/files (templates/ copied there).\n  files_dir: /srv/mayu/files#' \
	-e 's#^  boot_files_dir: /usr/share/mayu/boot$#  \# Debian package and image: /srv/mayu/boot.\n  boot_files_dir: /srv/mayu/boot#' \
	etc/mayu.yaml >"$work/mayu.yaml"
if [ "$(grep -c -e '^  files_dir: /srv/mayu/files$' -e '^  boot_files_dir: /srv/mayu/boot$' "$work/mayu.yaml")" != 2 ]; then
	echo "release: etc/mayu.yaml: no files_dir or boot_files_dir line to set to /srv/mayu" >&2
	exit 1
fi

deb() { # ARCH
	arch=$1
	root=$work/deb-$arch
	rm -rf "$root"
	install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
		"$root/etc/mayu" "$root/usr/share/mayu/templates" "$root/usr/share/doc/mayu" \
		"$root/usr/share/bash-completion/completions" \
		"$root/usr/share/zsh/vendor-completions" \
		"$root/usr/share/fish/vendor_completions.d" \
		"$root/usr/share/man/man1" "$root/usr/share/man/man8"
	install -m 0755 "$DIST/mayu-linux-$arch" "$root/usr/bin/mayu"
	install -m 0755 "$DIST/mayuctl-linux-$arch" "$root/usr/bin/mayuctl"
	# The unit as the repository has it, with the packaged binary's path
	# and the package's own first comment (how to start it).
	{
		cat packaging/debian/unit-header
		sed -e '1,/^\[Unit\]/{/^\[Unit\]/!d}' -e 's#/usr/local/bin/#/usr/bin/#g' systemd/mayu.service
	} >"$root/lib/systemd/system/mayu.service"
	chmod 0644 "$root/lib/systemd/system/mayu.service"
	# The configuration (a conffile: an upgrade keeps the operator's
	# edits; postinst makes it 0640 root:mayu, it holds secrets). The
	# templates are package data: postinst copies them to
	# /srv/mayu/files/templates, under node.files_dir, where mayu reads
	# them and the operator edits them. The admin tokens file is the
	# operator's: it holds secrets and is not shipped.
	install -m 0644 "$work/mayu.yaml" "$root/etc/mayu/mayu.yaml"
	install -m 0644 etc/templates/* "$root/usr/share/mayu/templates/"
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
	install -m 0755 packaging/debian/postinst packaging/debian/prerm "$root/DEBIAN/"
	# postrm removes on purge the template copies postinst made, if
	# unchanged: it knows them by their digests.
	sums=$(cd etc/templates && sha256sum -- * | sed 's/  / /')
	awk -v sums="$sums" '{ if (index($0, "@TEMPLATE_SUMS@")) { sub(/@TEMPLATE_SUMS@/, sums) } print }' \
		packaging/debian/postrm >"$root/DEBIAN/postrm"
	chmod 0755 "$root/DEBIAN/postrm"
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
# The image's CA bundle (HTTPS artifact upstreams) is this host's
# /etc/ssl/certs/ca-certificates.crt: the image is reproducible only on a
# host with the same ca-certificates version, which the image names in its
# label org.mayu-boot.ca-certificates.
ca_version=$(dpkg-query -W -f='ca-certificates ${Version}' ca-certificates 2>/dev/null || echo unknown)
(cd packaging/oci && $GO run . -version "$VERSION" -arch "$arches" \
	-binaries "$DIST/%s-linux-%s" -config "$work/mayu.yaml" -templates "$top/etc/templates" -epoch "$SOURCE_DATE_EPOCH" -ca-version "$ca_version" \
	-layout "$DIST/oci" -archive "$DIST/mayu_${VERSION}_oci.tar")
echo "release: $DIST/oci (oci:$DIST/oci:$VERSION), $DIST/mayu_${VERSION}_oci.tar"

(cd "$DIST" && sha256sum mayu-linux-* mayuctl-linux-* mayu_*.deb mayu_*_oci.tar >SHA256SUMS)
echo "release: $DIST/SHA256SUMS"
