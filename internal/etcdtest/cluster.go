package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/netlab"
)

// ClusterOptions shape a Cluster.
type ClusterOptions struct {
	// Host is the address every member listens on. Default 127.0.0.1.
	Host string
	// BasePort, when set, gives member i client port BasePort+2i and peer
	// port BasePort+2i+1 (inside a fresh network namespace every port is
	// free). Zero picks free loopback ports.
	BasePort int
	// Exec makes the command that runs a binary (etcd, etcdctl); a test
	// that runs the cluster inside a network namespace wraps it in
	// `ip netns exec`. Default exec.Command.
	Exec func(name string, args ...string) *exec.Cmd
	// TLS serves clients and peers over TLS with client-certificate
	// authentication (--client-cert-auth, --peer-client-cert-auth), with
	// certificates from a CA made for the cluster.
	TLS bool
	// Members is the number of members. Default 3.
	Members int
	// Snapshot restores every member's data directory from this file with
	// bin/etcdutl before the member starts, as docs/operations.md tells an
	// operator to (a backup restored; the embedded etcd moved to a
	// cluster). Empty: fresh members.
	Snapshot string
	// SkipHashCheck restores a db file copied out of a stopped etcd's data
	// directory, which carries no integrity hash (`etcdctl snapshot save`
	// writes one).
	SkipHashCheck bool
}

// Cluster is a real etcd cluster (3 members unless told otherwise): bin/etcd processes (`make etcd`
// builds them, and bin/etcdutl for Snapshot), removed when the test ends.
type Cluster struct {
	// Endpoints are the members' client URLs.
	Endpoints []string
	// CA signed every certificate of a TLS cluster; nil without TLS.
	CA *CA
	// Admin is a client certificate (CN root) for etcdctl; with auth on,
	// etcdctl also needs RootPassword.
	Admin KeyPair
	// RootPassword is root's password once EnableAuth ran.
	RootPassword string

	t     testing.TB
	o     ClusterOptions
	procs []*exec.Cmd
	logs  []*netlab.Output
}

// StartCluster starts an etcd cluster and waits until every member is
// healthy.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Exec == nil {
		o.Exec = exec.Command
	}
	if o.Members == 0 {
		o.Members = 3
	}
	c := &Cluster{t: t, o: o}
	scheme := "http"
	if o.TLS {
		scheme = "https"
		c.CA = NewCA(t, "etcd")
		c.Admin = c.CA.Client(t, "root")
	}
	type member struct{ client, peer string }
	var members []member
	var peers []string
	for i := range o.Members {
		var m member
		if o.BasePort > 0 {
			m.client = fmt.Sprintf("%s://%s:%d", scheme, o.Host, o.BasePort+2*i)
			m.peer = fmt.Sprintf("%s://%s:%d", scheme, o.Host, o.BasePort+2*i+1)
		} else {
			m.client = scheme + "://" + freeAddr(t)
			m.peer = scheme + "://" + freeAddr(t)
		}
		members = append(members, m)
		peers = append(peers, fmt.Sprintf("m%d=%s", i, m.peer))
		c.Endpoints = append(c.Endpoints, m.client)
	}
	etcd := Binary(t, "etcd")
	dir := t.TempDir()
	for i, m := range members {
		if o.Snapshot != "" {
			// What the operator runs on each member's host: the same
			// snapshot, the member's own name and peer URL, the whole
			// new cluster.
			args := []string{"snapshot", "restore", o.Snapshot,
				"--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(dir, fmt.Sprint("m", i)),
				"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-token", "etcdtest",
				"--initial-advertise-peer-urls", m.peer}
			if o.SkipHashCheck {
				args = append(args, "--skip-hash-check")
			}
			if out, err := o.Exec(Binary(t, "etcdutl"), args...).CombinedOutput(); err != nil {
				t.Fatalf("etcdtest: etcdutl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		args := []string{
			"--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(dir, fmt.Sprint("m", i)),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "etcdtest", "--log-level", "error",
		}
		if o.TLS {
			kp := c.CA.Server(t, fmt.Sprintf("m%d", i), o.Host, "localhost")
			args = append(args,
				"--cert-file", kp.Cert, "--key-file", kp.Key, "--trusted-ca-file", c.CA.File, "--client-cert-auth",
				"--peer-cert-file", kp.Cert, "--peer-key-file", kp.Key, "--peer-trusted-ca-file", c.CA.File, "--peer-client-cert-auth")
		}
		cmd := o.Exec(etcd, args...)
		log := &netlab.Output{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatalf("etcdtest: start etcd member %d: %v", i, err)
		}
		c.procs = append(c.procs, cmd)
		c.logs = append(c.logs, log)
	}
	t.Cleanup(func() {
		for i := range c.procs {
			c.Kill(i)
		}
		if t.Failed() {
			for i, l := range c.logs {
				t.Logf("etcd member %d log:\n%s", i, l.String())
			}
		}
	})
	c.waitHealthy()
	return c
}

// Kill stops member i at once (SIGKILL). Killing a stopped member is a
// no-op.
func (c *Cluster) Kill(i int) {
	p := c.procs[i]
	if p.ProcessState != nil {
		return
	}
	p.Process.Signal(syscall.SIGKILL)
	p.Wait()
}

// Freeze stops member i's process (SIGSTOP): its kernel still holds its
// connections, as a member whose host's link was cut does. Thaw resumes it.
func (c *Cluster) Freeze(i int) { c.procs[i].Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a member Freeze stopped.
func (c *Cluster) Thaw(i int) { c.procs[i].Process.Signal(syscall.SIGCONT) }

func (c *Cluster) waitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var out string
	var err error
	for time.Now().Before(deadline) {
		out, err = c.Etcdctl("endpoint", "health")
		if err == nil && strings.Count(out, "is healthy") == c.o.Members {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("etcdtest: the etcd cluster did not become healthy: %v\n%s", err, out)
}

// Etcdctl runs etcdctl against every member as root (with the admin
// certificate and, once auth is on, root's password) and returns its
// combined output.
func (c *Cluster) Etcdctl(args ...string) (string, error) {
	base := []string{"--endpoints", strings.Join(c.Endpoints, ","), "--command-timeout", "10s", "--dial-timeout", "5s"}
	if c.CA != nil {
		base = append(base, "--cacert", c.CA.File, "--cert", c.Admin.Cert, "--key", c.Admin.Key)
	}
	if c.RootPassword != "" {
		base = append(base, "--user", "root:"+c.RootPassword)
	}
	cmd := c.o.Exec(Binary(c.t, "etcdctl"), append(base, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustEtcdctl is Etcdctl, failing the test on error.
func (c *Cluster) MustEtcdctl(args ...string) string {
	c.t.Helper()
	out, err := c.Etcdctl(args...)
	if err != nil {
		c.t.Fatalf("etcdtest: etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// EnableAuth turns etcd's authentication on the way docs/etcd.md tells an
// operator to: a root user first, then a role that may read and write
// under prefix and nothing else, a user with that role and password, and
// `etcdctl auth enable`.
func (c *Cluster) EnableAuth(role, user, password, prefix string) {
	c.t.Helper()
	root := "root-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	c.MustEtcdctl("user", "add", "root", "--new-user-password", root)
	c.MustEtcdctl("user", "grant-role", "root", "root")
	c.AddUser(role, user, password, prefix)
	c.MustEtcdctl("auth", "enable")
	c.RootPassword = root
}

// AddUser adds a user with password whose role (created if need be) may
// read and write the keys under prefix.
func (c *Cluster) AddUser(role, user, password, prefix string) {
	c.t.Helper()
	if out, err := c.Etcdctl("role", "get", role); err != nil {
		if !strings.Contains(out, "role name not found") {
			c.t.Fatalf("etcdtest: etcdctl role get %s: %v\n%s", role, err, out)
		}
		c.MustEtcdctl("role", "add", role)
		c.MustEtcdctl("role", "grant-permission", role, "--prefix=true", "readwrite", prefix)
	}
	c.MustEtcdctl("user", "add", user, "--new-user-password", password)
	c.MustEtcdctl("user", "grant-role", user, role)
}

// Binary is the path of bin/<name> at the module root, as `make etcd`
// builds it; the test fails if it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("etcdtest: no go.mod above the test's directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("etcdtest: %v (run `make etcd`: it builds bin/etcd, bin/etcdctl and bin/etcdutl from the versions in go.mod)", err)
	}
	return p
}

// NonLeader is the index of a member that does not lead raft: when it
// goes silent, etcd itself goes on at once. Not for TLS clusters.
func (c *Cluster) NonLeader() int {
	c.t.Helper()
	cli := c.client(c.Endpoints)
	defer cli.Close()
	for i, ep := range c.Endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			c.t.Fatal(err)
		}
		if st.Leader != st.Header.MemberId {
			return i
		}
	}
	c.t.Fatal("every member leads")
	return -1
}

// ClientWithout is a client of every member but member i (one that a test
// silences), closed when the test ends. Not for TLS clusters.
func (c *Cluster) ClientWithout(i int) *clientv3.Client {
	c.t.Helper()
	cli := c.client(slices.Delete(slices.Clone(c.Endpoints), i, i+1))
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

func (c *Cluster) client(endpoints []string) *clientv3.Client {
	c.t.Helper()
	if c.CA != nil {
		c.t.Fatal("etcdtest: a TLS cluster's clients need its certificates")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 3 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	return cli
}
