// Package packaging holds what `make release` builds mayu's packages from
// (debian/: the Debian package's metadata and maintainer scripts; oci/: the
// image builder, a module of its own). Its test builds a release for this
// machine's architecture with scripts/release.sh and checks what an
// operator gets: the binaries, the .deb installed and purged on this
// Debian, and the OCI image read back by hand and by skopeo and umoci.
package packaging
