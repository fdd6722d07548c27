package config

import (
	"reflect"
	"strings"
)

// Changed names the settings that differ between two configurations, by
// key (node.ports, cluster.pools), one level below node and cluster: what
// a reload tells the operator will wait for a restart.
func Changed(a, b *Config) []string {
	var keys []string
	for _, section := range []struct {
		name string
		a, b any
	}{{"node", a.Node, b.Node}, {"cluster", a.Cluster, b.Cluster}} {
		va, vb := reflect.ValueOf(section.a), reflect.ValueOf(section.b)
		for i := range va.NumField() {
			f := va.Type().Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
				keys = append(keys, section.name+"."+tag)
			}
		}
	}
	return keys
}
