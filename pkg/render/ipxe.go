package render

import (
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
kernel {{.Kernel}} initrd=initrd.img {{.KernelArgs}} mayu.url={{.MayuURL}} mayu.id={{.ID}} mayu.token={{.Token}} mayu.first_stage={{.FirstStage}} || goto failed
initrd --name initrd.img {{.Initrd}} || goto failed
boot || goto failed
:failed
echo mayu: loading the installer failed, retrying in 10 seconds
sleep 10
goto retry
`))

// InstallerScript boots the installer kernel with the arguments that lead
// it to its first-stage script. initrd=initrd.img plus `initrd --name` lets
// the same script work for the EFI stub, which loads the initrd by name.
func InstallerScript(c Context, kernelArgs string) []byte {
	var b strings.Builder
	_ = installerScript.Execute(&b, map[string]string{
		"ID":         hostile.Plain(c.Machine.ID),
		"Profile":    hostile.Plain(c.Machine.Profile),
		"Address":    hostile.Plain(c.Machine.InternalAddr),
		"MayuURL":    c.MayuURL,
		"Kernel":     c.URLs.Kernel,
		"Initrd":     c.URLs.Initrd,
		"KernelArgs": oneLine(kernelArgs),
		"Token":      c.Token,
		"FirstStage": c.URLs.FirstStage,
	})
	return []byte(b.String())
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
