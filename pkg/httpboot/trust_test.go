package httpboot_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/token"
)

// notInstaller fails unless script is a wait script that hands out no
// token and names nothing of the machine id.
func notInstaller(t *testing.T, what, script, id string) {
	t.Helper()
	if strings.Contains(script, "kernel ") || strings.Contains(script, "mayu.token") || strings.Contains(script, id) {
		t.Fatalf("%s got something of machine %s:\n%s", what, id, script)
	}
}

// A request that finds a record only by its MAC gets nothing of it unless
// it also sends the record's serial and UUID.
func TestMACMatchNeedsTheRecordsIdentity(t *testing.T) {
	l := newLab(t, nil)
	const uuid = "8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	installerURLs(t, l.script("LAB-SN-0001", uuid, "52-54-00-12-34-56"))

	for what, q := range map[string]string{
		"only the MAC":     "mac=52:54:00:12:34:56",
		"another serial":   "serial=" + hex.EncodeToString([]byte("EVIL-1")) + "&uuid=" + uuid + "&mac=52:54:00:12:34:56",
		"no UUID":          "serial=" + hex.EncodeToString([]byte("0123456789")) + "&mac=52:54:00:12:34:56",
		"another UUID":     "serial=" + hex.EncodeToString([]byte("0123456789")) + "&uuid=00000000-0000-4000-8000-00000000000a&mac=52:54:00:12:34:56",
		"a similar serial": "serial=" + hex.EncodeToString([]byte("lab-sn-0001x")) + "&uuid=" + uuid + "&mac=52:54:00:12:34:56",
	} {
		s := l.expect("GET", "/ipxe?"+q, 200)
		notInstaller(t, what, s, "lab-sn-0001")
		if !strings.Contains(s, "an operator must resolve it") {
			t.Errorf("%s: the refusal does not say what to do:\n%s", what, s)
		}
	}
	if n := l.counter("mayu_node_refused_total", "identity_mismatch"); n != 5 {
		t.Errorf("mayu_node_refused_total{reason=identity_mismatch} = %v, want 5", n)
	}
	// Nothing was registered or changed by the refused requests.
	if ms, _, _ := l.reg.List(context.Background()); len(ms) != 1 || ms[0].Serial != "LAB-SN-0001" || ms[0].UUID != uuid {
		t.Fatalf("machines after refused requests: %+v", ms)
	}
	// The machine itself still gets its installer.
	installerURLs(t, l.script("LAB-SN-0001", uuid, "52-54-00-12-34-56"))
}

// The serial is printed on the chassis: a request that sends a machine's
// serial (so reaches its record by id) with another UUID gets nothing of
// it, and attaches no MAC to it (which DHCP would later ignore).
func TestIDMatchNeedsTheRecordsUUID(t *testing.T) {
	l := newLab(t, nil)
	const uuid = "8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	installerURLs(t, l.script("LAB-SN-0002", uuid, "52-54-00-12-34-60"))
	for what, u := range map[string]string{
		"another UUID": "00000000-0000-4000-8000-00000000000b",
		"no UUID":      "",
	} {
		notInstaller(t, what, l.script("LAB-SN-0002", u, "52-54-00-66-66-66"), "lab-sn-0002")
	}
	m, err := l.reg.Get(context.Background(), "lab-sn-0002")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.MACs) != 1 || m.UUID != uuid {
		t.Fatalf("the refused requests changed the record: MACs %v, UUID %q", m.MACs, m.UUID)
	}
	if n := l.counter("mayu_node_refused_total", "identity_mismatch"); n != 2 {
		t.Errorf("mayu_node_refused_total{reason=identity_mismatch} = %v, want 2", n)
	}
	// The machine itself, with a second NIC, still gets its installer.
	installerURLs(t, l.script("LAB-SN-0002", uuid, "52-54-00-12-34-61"))
}

// A machine an operator pre-registered by MAC takes the serial and UUID of
// its first contact; a request with other values is refused after that.
func TestPreregisteredTakesFirstContact(t *testing.T) {
	l := newLab(t, func(c *config.Cluster) { c.Registration = config.RegistrationPreregistered })
	ctx := context.Background()
	if _, _, err := l.reg.Register(ctx, registry.Registration{ID: "rack1-u7", MACs: []string{"52:54:00:00:00:07"}, Preregistered: true}); err != nil {
		t.Fatal(err)
	}
	const uuid = "11111111-2222-4333-8444-555555555555"
	_, tok := installerURLs(t, l.script("SN-U7", uuid, "52-54-00-00-00-07"))
	m, _ := l.reg.Get(ctx, "rack1-u7")
	if m.Serial != "SN-U7" || m.UUID != uuid {
		t.Fatalf("first contact not recorded: serial %q uuid %q", m.Serial, m.UUID)
	}
	// A retry is the same machine, with the same token.
	if _, again := installerURLs(t, l.script("SN-U7", uuid, "52-54-00-00-00-07")); again != tok {
		t.Fatal("a retry got another token")
	}
	notInstaller(t, "another serial", l.script("SN-OTHER", uuid, "52-54-00-00-00-07"), "rack1-u7")
	notInstaller(t, "no serial", l.script("", uuid, "52-54-00-00-00-07"), "rack1-u7")
	// Pre-registered by id: its first contact by id fills in what a later
	// match by MAC is checked against.
	if _, _, err := l.reg.Register(ctx, registry.Registration{ID: "sn-u8", MACs: []string{"52:54:00:00:00:08"}, Preregistered: true}); err != nil {
		t.Fatal(err)
	}
	installerURLs(t, l.script("SN-U8", "", "52-54-00-00-00-08"))
	if m, _ := l.reg.Get(ctx, "sn-u8"); m.Serial != "SN-U8" {
		t.Fatalf("serial of sn-u8: %q", m.Serial)
	}
	notInstaller(t, "MAC only", l.expect("GET", "/ipxe?mac=52:54:00:00:00:08", 200), "sn-u8")
}

// A boot request never attaches a MAC to an installed or running machine:
// DHCP would ignore the hardware that has it. Before the install it does.
func TestNoNewMACForAnInstalledMachine(t *testing.T) {
	l := newLab(t, nil)
	ctx := context.Background()
	installerURLs(t, l.script("SN-I", "", "52-54-00-00-01-01"))
	// Another NIC of the same machine, before it is installed: attached.
	installerURLs(t, l.script("SN-I", "", "52-54-00-00-01-02"))
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("r", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("r", time.Now()) },
	} {
		if _, err := l.reg.Update(ctx, "sn-i", step); err != nil {
			t.Fatal(err)
		}
	}
	s := l.script("SN-I", "", "52-54-00-00-01-03")
	if strings.Contains(s, "kernel") || !strings.Contains(s, "\nexit") {
		t.Fatalf("installed machine with a new MAC got:\n%s", s)
	}
	m, _ := l.reg.Get(ctx, "sn-i")
	if len(m.MACs) != 2 || m.HasMAC("52:54:00:00:01:03") {
		t.Fatalf("MACs of the installed machine: %v", m.MACs)
	}
	if owners, _ := l.reg.MACOwners(ctx); owners["52:54:00:00:01:03"] != "" {
		t.Fatal("the new MAC was indexed")
	}
	if n := l.counter("mayu_node_refused_total", "installed_mac"); n != 1 {
		t.Errorf("mayu_node_refused_total{reason=installed_mac} = %v, want 1", n)
	}
	// The serial of one machine with the MAC of another: refused, naming
	// neither.
	installerURLs(t, l.script("SN-J", "", "52-54-00-00-01-09"))
	notInstaller(t, "sn-i's serial with sn-j's MAC", l.script("SN-K", "", "52-54-00-00-01-09"), "sn-j")
}

// A node call answers an unknown id exactly as a wrong token: the token is
// checked before anything is said of the id.
func TestUnknownIDLooksLikeAWrongToken(t *testing.T) {
	l := newLab(t, nil)
	_, tok := installerURLs(t, l.script("SN-A", "", "52-54-00-00-00-0a"))
	wrong := strings.Repeat("0", 64)
	for _, call := range []struct{ method, path string }{
		{"GET", "first-stage"}, {"GET", "final-config"}, {"POST", "installed"}, {"POST", "failed"}, {"POST", "boot-complete"},
	} {
		known, knownBody, _ := l.do(call.method, "/machines/sn-a/"+call.path+"?token="+wrong)
		unknown, unknownBody, _ := l.do(call.method, "/machines/sn-zz/"+call.path+"?token="+tok)
		if known != http.StatusForbidden || unknown != known {
			t.Errorf("%s: wrong token %d, unknown id %d", call.path, known, unknown)
		}
		if strings.ReplaceAll(knownBody, "sn-a", "ID") != strings.ReplaceAll(unknownBody, "sn-zz", "ID") {
			t.Errorf("%s: the answers differ:\n%s\n%s", call.path, knownBody, unknownBody)
		}
	}
	if n := l.counter("mayu_node_refused_total", "token"); n != 10 {
		t.Errorf("mayu_node_refused_total{reason=token} = %v, want 10", n)
	}
}

// etcd's own words never reach a caller on the boot network.
func TestNoStoreErrorTextForNodes(t *testing.T) {
	l := newLabOn(t, nil, func(*testfakes.Machines) httpboot.Machines { return testfakes.BrokenMachines{} })
	script := l.expect("GET", "/ipxe?serial="+hex.EncodeToString([]byte("SN-X"))+"&mac=52:54:00:00:00:09", http.StatusOK)
	code, body, _ := l.do("POST", "/machines/sn-x/installed?token=x")
	for what, text := range map[string]string{"iPXE script": script, "node call": body} {
		if strings.Contains(text, testfakes.ErrBroken.Error()) || strings.Contains(text, "etcd") {
			t.Errorf("%s tells etcd's error:\n%s", what, text)
		}
	}
	if code != http.StatusServiceUnavailable {
		t.Fatalf("node call with etcd down: %d", code)
	}
}

// A machine deleted and added again is a new record: the token on its old
// disk opens nothing of it.
func TestReAddedMachineRefusesTheOldToken(t *testing.T) {
	l := newLab(t, nil)
	ctx := context.Background()
	fs, tok := installerURLs(t, l.script("SN-D", "", "52-54-00-00-00-0d"))
	l.expect("GET", fs, 200)
	if err := l.reg.Delete(ctx, "sn-d"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.reg.Register(ctx, registry.Registration{ID: "sn-d", Preregistered: true}); err != nil {
		t.Fatal(err)
	}
	l.expect("GET", fs, 403)
	l.expect("POST", strings.Replace(fs, "first-stage", "boot-complete", 1), 403)
	_, fresh := installerURLs(t, l.script("SN-D", "", "52-54-00-00-00-0d"))
	if fresh == tok {
		t.Fatal("the re-added machine got its old token")
	}
}

// After a rotation the previous secret opens what it opened for its window
// only; every token handed out is made with the new one.
func TestRotatedSecret(t *testing.T) {
	l := newLab(t, nil)
	fs, tok := installerURLs(t, l.script("SN-R", "", "52-54-00-00-00-0e"))
	old, _ := l.reg.Secrets(context.Background())
	next := []byte("a new cluster secret of sixty-four characters, rotated just now")
	l.reg.SetSecrets(token.Keys{Current: next, Previous: old.Current, PreviousUntil: time.Now().Add(time.Hour)})

	body := l.expect("GET", fs, 200) // an install in flight goes on
	if n := l.counter("mayu_node_tokens_accepted_total", "previous_secret"); n != 1 {
		t.Errorf("previous-secret tokens accepted: %v", n)
	}
	// What it renders now carries a token of the new secret.
	final := regexp.MustCompile(`'(http://[^']*final-config[^']*)'`).FindStringSubmatch(body)[1]
	if strings.Contains(final, tok) {
		t.Fatal("the first stage rendered after the rotation carries the old token")
	}
	l.expect("GET", final, 200)
	if _, again := installerURLs(t, l.script("SN-R", "", "52-54-00-00-00-0e")); again == tok {
		t.Fatal("the iPXE script still hands out a token of the old secret")
	}
	// The window over, the old secret opens nothing.
	l.reg.SetSecrets(token.Keys{Current: next, Previous: old.Current, PreviousUntil: time.Now().Add(-time.Second)})
	l.expect("GET", fs, 403)
	l.expect("GET", final, 200)
}
