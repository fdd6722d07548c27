// Package buildinfo names the version of a mayu binary: the one `make`
// stamps with -ldflags, or else what the Go toolchain recorded when it was
// built (`go install …@v1.2.3` records the module version, a build from a
// git checkout the commit), so a binary never just says "dev".
package buildinfo

import "runtime/debug"

// Version returns stamped when the build set it, else the version the Go
// toolchain recorded in the binary.
func Version(stamped string) string {
	if stamped != "" {
		return stamped
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return fromBuildInfo(info)
}

func fromBuildInfo(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return "devel-" + rev
}
