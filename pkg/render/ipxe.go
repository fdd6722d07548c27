package render

import (
	"fmt"
	"strings"
	"text/template"

	"github.com/mayu-boot/mayu/pkg/hostile"
)

// The iPXE scripts are built in: they are the protocol between mayu and
// iPXE, not site policy. Site policy lives in the kernel arguments and the
// operator's templates.
//
// Text that may hold anything a machine sent (a failure reason, a serial
// quoted in an error) enters a script only through hostile.Plain, whose
// allow-list has nothing iPXE gives a meaning to: no ${...} expansion, no
// #, &&, || or ; to end the echo and start a command.

// ChainScript is what DHCP points iPXE at. It sends back everything that
// identifies the machine; the serial goes hex-encoded so that any bytes a
// vendor put there survive the URL. It expands only settings iPXE formats
// itself (a MAC, a UUID, hex, its build architecture): iPXE expands a line
// before it splits it into commands, so a plain ${serial} holding " || ..."
// would run as a command.
func ChainScript(mayuURL string) []byte {
	return []byte("#!ipxe\n" +
		"echo mayu: identifying ${mac} (uuid ${uuid})\n" +
		"chain --replace --autofree " + mayuURL + "/ipxe?serial=${serial:hexraw}&uuid=${uuid}&mac=${mac:hexhyp}&arch=${buildarch} || goto retry\n" +
		":retry\n" +
		"echo mayu: cannot reach " + mayuURL + ", retrying in 10 seconds\n" +
		"sleep 10\n" +
		"chain --replace --autofree " + mayuURL + "/boot.ipxe\n")
}

var installerScript = template.Must(template.New("installer").Parse(`#!ipxe
echo mayu: installing machine {{.ID}} (profile {{.Profile}}, address {{.Address}})
:retry
kernel {{.Kernel}} initrd=initrd.img {{.KernelArgs}} mayu.url={{.MayuURL}} mayu.id={{.ID}} mayu.token={{.Token}} {{.FirstStageArg}}={{.FirstStage}} || goto failed
initrd --name initrd.img {{.Initrd}} || goto failed
boot || goto failed
:failed
echo mayu: loading the installer failed, retrying in 10 seconds
sleep 10
goto retry
`))

// Where the installer finds its first stage on the kernel line: a script
// in mayu.first_stage, which mayu's own installers read; an Ignition
// config in ignition.config.url, which Ignition in the installer's
// initramfs (Flatcar's PXE image, booted with flatcar.first_boot=1)
// fetches and applies before the installer's systemd starts.
const (
	firstStageScriptArg   = "mayu.first_stage"
	firstStageIgnitionArg = "ignition.config.url"
)

// InstallerScript boots the installer kernel with the arguments that lead
// it to its first-stage script. initrd=initrd.img plus `initrd --name` lets
// the same script work for the EFI stub, which loads the initrd by name.
func InstallerScript(c Context, kernelArgs string) []byte {
	return installer(c, kernelArgs, firstStageScriptArg)
}

// InstallerScript is the installer script for the renderer's first
// stage: where it renders Ignition (cluster.templates.first_stage_format:
// ignition), the kernel line passes the machine's first-stage URL, token
// and all, as ignition.config.url instead of mayu.first_stage.
func (r *Renderer) InstallerScript(c Context, kernelArgs string) []byte {
	if r.FirstStageIsIgnition() {
		return installer(c, kernelArgs, firstStageIgnitionArg)
	}
	return installer(c, kernelArgs, firstStageScriptArg)
}

func installer(c Context, kernelArgs, firstStageArg string) []byte {
	var b strings.Builder
	_ = installerScript.Execute(&b, map[string]string{
		"ID":            hostile.Plain(c.Machine.ID),
		"Profile":       hostile.Plain(c.Machine.Profile),
		"Address":       hostile.Plain(c.Machine.InternalAddr),
		"MayuURL":       ipxeWord(c.MayuURL),
		"Kernel":        ipxeWord(c.URLs.Kernel),
		"Initrd":        ipxeWord(c.URLs.Initrd),
		"KernelArgs":    oneLine(kernelArgs),
		"Token":         ipxeWord(c.Token),
		"FirstStageArg": firstStageArg,
		"FirstStage":    ipxeWord(c.URLs.FirstStage),
	})
	return []byte(b.String())
}

// ipxeWord keeps a URL, id or token that mayu puts on the kernel line one
// word of it, with no meaning to iPXE: every byte outside URL characters
// is percent-encoded, so no space splits it, no ${...} expands, no quote
// or backslash groups, and no "&&", "||", ";" or "#" starts a command or
// a comment: it holds none of &, |, ;, #, $, quotes, backslash, space or
// controls at all. mayu's URLs (the
// advertise address, /machines/<id>/, a hex token) and ids
// ([a-z0-9][a-z0-9._-]*) are made of URL characters and pass unchanged,
// which TestInstallerWordsPassUnchanged holds; the encoding is there so
// that no future change to what they hold can break the line.
func ipxeWord(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if urlByte(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// urlByte: RFC 3986's unreserved characters and the delimiters mayu's
// URLs use (scheme, host and port, path, a query of one parameter, an
// IPv6 literal's brackets, and % of an encoding already there). Not &,
// which mayu's URLs never hold: "&&" is a command separator to iPXE.
func urlByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~:/?=%@[]+,", c) >= 0
}

// LocalBootScript sends an installed machine to its disk. Returning from
// iPXE with `exit` makes the firmware try the next boot device.
func LocalBootScript(id string) []byte {
	return []byte("#!ipxe\necho mayu: machine " + hostile.Plain(id) + " is installed, booting from the local disk\nexit\n")
}

// WaitScript tells the console why the machine cannot proceed, waits, and
// asks again, so that the machine proceeds by itself once an operator acts
// (pre-registers it, reinstalls it, fixes etcd).
func WaitScript(mayuURL, why string) []byte {
	return []byte("#!ipxe\n" +
		"echo mayu: " + hostile.Plain(why) + "\n" +
		"echo mayu: asking again in 60 seconds\n" +
		"sleep 60\n" +
		"chain --replace --autofree " + mayuURL + "/boot.ipxe\n")
}

// oneLine keeps the operator's kernel arguments (cluster.install.kernel_args)
// on their line of the script, without ${...} expansion. They are site
// policy, not node text, so they keep their punctuation.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.ReplaceAll(s, "$", "")
}
