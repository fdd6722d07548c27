// Package dhcp is the leader's side of the boot: it answers PXE firmware
// and iPXE with an address and the next thing to boot, and stays silent
// to installed machines so that they boot from disk.
//
// The boot decision is a pure function (Decide) of what the client says
// about itself; the server around it deals with sockets, leases and etcd.
package dhcp

import (
	"bytes"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Firmware is what kind of boot client asks.
type Firmware int

const (
	Plain    Firmware = iota // no PXE options: an address only
	PXE                      // firmware PXE (vendor class PXEClient)
	HTTPBoot                 // UEFI HTTP boot (vendor class HTTPClient)
	IPXE                     // iPXE (user class "iPXE" or option 175)
)

func (f Firmware) String() string {
	return [...]string{"plain", "pxe", "httpboot", "ipxe"}[f]
}

// Client is what a request says about the booting machine.
type Client struct {
	Firmware Firmware
	// Arch is the first client architecture of option 93, if any.
	Arch    iana.Arch
	HasArch bool
}

// optIPXE is iPXE's encapsulated option space (175); sub-option 176 = 1
// tells iPXE to skip waiting for ProxyDHCP offers.
const optIPXE = dhcpv4.GenericOptionCode(175)

// Classify reads the boot-relevant options of a request.
func Classify(req *dhcpv4.DHCPv4) Client {
	var c Client
	if archs := req.ClientArch(); len(archs) > 0 {
		c.Arch, c.HasArch = archs[0], true
	}
	userClass := req.GetOneOption(dhcpv4.OptionUserClassInformation)
	vendor := req.ClassIdentifier()
	switch {
	// iPXE sends option 77 "iPXE" (not RFC 3004 encoded) and its own
	// option 175; either identifies it.
	case bytes.Contains(userClass, []byte("iPXE")) || req.Options.Has(optIPXE):
		c.Firmware = IPXE
	case strings.HasPrefix(vendor, "HTTPClient"):
		c.Firmware = HTTPBoot
	case strings.HasPrefix(vendor, "PXEClient"):
		c.Firmware = PXE
	}
	return c
}

// Policy is what the operator configured for boot answers.
type Policy struct {
	BIOS, EFI64, EFI32, ARM64 string // iPXE builds by architecture
	ScriptURL                 string // what iPXE chains to
	HTTPBase                  string // base URL of boot files over HTTP (for HTTPBoot)
	AnswerInstalledIPXE       bool
}

// Decision is the answer to one boot client.
type Decision struct {
	// Ignore: send nothing at all (an installed machine).
	Ignore bool
	Reason string
	// BootFile is the file name (TFTP) or URL (iPXE, HTTP boot); empty for
	// an address only.
	BootFile string
	// NextServer: set siaddr to the advertise address (TFTP boot).
	NextServer bool
	// IPXEOptions: add option 175 with sub-option 176 = 1.
	IPXEOptions bool
	// HTTPClient: echo vendor class "HTTPClient", which UEFI HTTP boot
	// requires in the answer.
	HTTPClient bool
}

// Decide is the boot decision. installed means the client's MAC belongs
// to a machine that is installed or running.
func Decide(c Client, installed bool, p Policy) Decision {
	if installed && !(c.Firmware == IPXE && p.AnswerInstalledIPXE) {
		// Silence makes the firmware give up on the network and boot
		// the disk: the installed OS is never reinstalled by accident.
		return Decision{Ignore: true, Reason: "installed"}
	}
	switch c.Firmware {
	case IPXE:
		return Decision{BootFile: p.ScriptURL, IPXEOptions: true, Reason: "ipxe script"}
	case HTTPBoot:
		file := archFile(c, p)
		if file == "" {
			return Decision{Reason: "no boot file for this architecture", HTTPClient: true}
		}
		return Decision{BootFile: p.HTTPBase + file, HTTPClient: true, Reason: "http boot"}
	case PXE:
		file := archFile(c, p)
		if file == "" {
			return Decision{Reason: "no boot file for this architecture"}
		}
		return Decision{BootFile: file, NextServer: true, Reason: "pxe"}
	}
	return Decision{Reason: "address only"}
}

// archFile picks the iPXE build for the client architecture (RFC 4578
// and IANA's registry): 0 BIOS, 6 IA32 UEFI, 7 and 9 x86-64 UEFI,
// 11 arm64 UEFI; HTTP boot uses 15 (IA32), 16 (x86-64), 19 (arm64).
func archFile(c Client, p Policy) string {
	if !c.HasArch {
		if c.Firmware == PXE {
			return p.BIOS // old BIOS PXE ROMs send no option 93
		}
		return ""
	}
	switch c.Arch {
	case iana.INTEL_X86PC:
		return p.BIOS
	case iana.EFI_X86_64, iana.EFI_BC, iana.EFI_X86_64_HTTP:
		return p.EFI64
	case iana.EFI_IA32, iana.EFI_X86_HTTP:
		return p.EFI32
	case iana.EFI_ARM64, iana.EFI_ARM64_HTTP:
		return p.ARM64
	}
	return ""
}
