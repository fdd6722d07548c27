package state

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docs/etcd.md documents every key mayu writes: its table of keys and
// Layout name the same key spaces, in the same order, with the same owner.
func TestSchemaMatchesDocs(t *testing.T) {
	data, err := os.ReadFile("../../docs/etcd.md")
	if err != nil {
		t.Fatal(err)
	}
	_, keys, ok := strings.Cut(string(data), "\n## Keys\n")
	if !ok {
		t.Fatal(`docs/etcd.md has no "## Keys" section`)
	}
	keys, _, _ = strings.Cut(keys, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\|[^\\n]*?\\| ([a-z]+) \\| [^|]*\\|$")
	var documented []Space
	for _, m := range row.FindAllStringSubmatch(keys, -1) {
		documented = append(documented, Space{Pattern: m[1], Owner: m[2]})
	}
	if !slices.Equal(documented, Layout) {
		t.Errorf("docs/etcd.md documents\n%v\nbut pkg/state declares\n%v", documented, Layout)
	}
}

// Match tells a key of the schema from one that is not.
func TestMatch(t *testing.T) {
	k := Keys{Prefix: "/mayu/"}
	for _, key := range []string{k.Machine("sn-1"), k.MAC("52:54:00:00:00:01"), k.Address("10.0.0.1"),
		k.ProfileSlot("core", 0), k.Secret(), k.Schema(), k.Replica("mayu-1"), k.Config(), k.Election() + "/694d8f2a1b3c",
		k.AuditEntry("20261129T081636.123456789Z-1a2b3c4d"), k.Artifact("flatcar-4081.2.0-image"),
		k.ArtifactClaim("flatcar-4081.2.0-image"), k.ArtifactHolder(strings.Repeat("ab", 32), "mayu-1"),
		k.ArtifactProgress("flatcar-4081.2.0-image", "mayu-2")} {
		if !k.Match(key) {
			t.Errorf("%s: not in the schema", key)
		}
	}
	for _, key := range []string{"/mayu/other", "/mayu/config/x", "/mayu/profiles/core", "/other/machines/x", "/mayu/machines/",
		"/mayu/artifact-holders/" + strings.Repeat("ab", 32), "/mayu/artifact-progress/x"} {
		if k.Match(key) {
			t.Errorf("%s: in the schema", key)
		}
	}
}
