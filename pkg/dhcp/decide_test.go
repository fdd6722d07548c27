package dhcp

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Options as real firmware sends them (reference/lab.md §6).
var (
	optClientNDI = dhcpv4.GenericOptionCode(94)
	// iPXE's option 175 from the qemu BIOS ROM: bus-id, version and
	// feature flags.
	ipxeFeatures = []byte{
		0xb1, 0x05, 0x01, 0x1a, 0xf4, 0x10, 0x00, 0xeb, 0x03, 0x01, 0x00, 0x00,
		0x17, 0x01, 0x01, 0x22, 0x01, 0x01, 0x13, 0x01, 0x01, 0x11, 0x01, 0x01,
		0x27, 0x01, 0x01, 0x19, 0x01, 0x01, 0x29, 0x01, 0x01, 0x10, 0x01, 0x02,
		0x21, 0x01, 0x01, 0x15, 0x01, 0x01, 0x18, 0x01, 0x01, 0x12, 0x01, 0x01,
	}
	// Option 97 from EDK2 for SMBIOS UUID 8f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b.
	edk2UUID = []byte{0x00, 0x1c, 0x2b, 0x3a, 0x8f, 0x5e, 0x4d, 0x60, 0x4f, 0x8a, 0x7b, 0x9c, 0x0d, 0x1e, 0x2f, 0x3a, 0x4b}
)

func vendor(s string) dhcpv4.Modifier  { return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(s)) }
func arch(a iana.Arch) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClientArch(a)) }

// rawIPXE is option 77 as iPXE sends it: the bare string, not RFC 3004
// length-prefixed.
var rawIPXE = dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))

// firmware is what each kind of boot client puts in its DHCPDISCOVER.
var firmware = map[string][]dhcpv4.Modifier{
	"bios-pxe": {
		vendor("PXEClient:Arch:00000:UNDI:002001"), arch(iana.INTEL_X86PC),
		dhcpv4.WithGeneric(optClientNDI, []byte{1, 2, 1}),
	},
	"bios-pxe-no-arch": {vendor("PXEClient:Arch:00000:UNDI:002001")},
	"edk2-pxe-x64": {
		vendor("PXEClient:Arch:00007:UNDI:003000"), arch(iana.EFI_X86_64),
		dhcpv4.WithGeneric(optClientNDI, []byte{1, 3, 0}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, edk2UUID),
	},
	"efi-bc-pxe":    {vendor("PXEClient:Arch:00009:UNDI:003000"), arch(iana.EFI_BC)},
	"efi-ia32-pxe":  {vendor("PXEClient:Arch:00006:UNDI:003000"), arch(iana.EFI_IA32)},
	"efi-arm64-pxe": {vendor("PXEClient:Arch:00011:UNDI:003000"), arch(iana.EFI_ARM64)},
	"efi-arm32-pxe": {vendor("PXEClient:Arch:00010:UNDI:003000"), arch(iana.EFI_ARM32)},
	"http-x64":      {vendor("HTTPClient:Arch:00016:UNDI:003000"), arch(iana.EFI_X86_64_HTTP)},
	"http-arm64":    {vendor("HTTPClient:Arch:00019:UNDI:003000"), arch(iana.EFI_ARM64_HTTP)},
	"http-no-arch":  {vendor("HTTPClient:Arch:00016:UNDI:003000")},
	// The qemu iPXE ROM already identifies itself in its first DHCP.
	"ipxe-bios-rom": {
		vendor("PXEClient:Arch:00000:UNDI:002001"), arch(iana.INTEL_X86PC),
		dhcpv4.WithGeneric(optClientNDI, []byte{1, 2, 1}), rawIPXE,
		dhcpv4.WithGeneric(optIPXE, ipxeFeatures),
		dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, []byte{1, 0x52, 0x54, 0, 0x12, 0x34, 0x56}),
	},
	"ipxe-efi": {
		vendor("PXEClient:Arch:00007:UNDI:003010"), arch(iana.EFI_X86_64), rawIPXE,
	},
	"ipxe-user-class-only": {rawIPXE},
	"ipxe-rfc3004":         {dhcpv4.WithUserClass("iPXE", true)},
	"ipxe-opt175-only":     {dhcpv4.WithGeneric(optIPXE, ipxeFeatures)},
	"initrd-udhcpc": {
		vendor("netboot-initrd"),
		dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, []byte{1, 0x52, 0x54, 0, 0x12, 0x34, 0x56}),
	},
	"plain": {},
}

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// firmwarePacket builds a DHCPDISCOVER for a firmware kind and decodes it from
// its wire bytes, as the server sees it.
func firmwarePacket(t testing.TB, kind string) *dhcpv4.DHCPv4 {
	t.Helper()
	mods, ok := firmware[kind]
	if !ok {
		t.Fatalf("no firmware %q", kind)
	}
	d, err := dhcpv4.NewDiscovery(testMAC, mods...)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := dhcpv4.FromBytes(d.ToBytes())
	if err != nil {
		t.Fatalf("%s: decode own packet: %v", kind, err)
	}
	return wire
}

var (
	fullPolicy = Policy{
		BIOS: "undionly.kpxe", EFI64: "ipxe.efi", EFI32: "ipxe-ia32.efi", ARM64: "ipxe-arm64.efi",
		ScriptURL: "http://10.0.0.1:4081/boot.ipxe", HTTPBase: "http://10.0.0.1:4081/tftp/",
	}
	// An operator who has only the two common builds.
	sparsePolicy = Policy{
		BIOS: "undionly.kpxe", EFI64: "ipxe.efi",
		ScriptURL: "http://10.0.0.1:4081/boot.ipxe", HTTPBase: "http://10.0.0.1:4081/tftp/",
	}
)

func TestClassifyAndDecide(t *testing.T) {
	cases := []struct {
		kind     string
		policy   Policy
		firmware Firmware
		arch     iana.Arch
		hasArch  bool
		want     Decision // Reason is not compared, only required
	}{
		{"bios-pxe", fullPolicy, PXE, iana.INTEL_X86PC, true, Decision{BootFile: "undionly.kpxe", NextServer: true}},
		{"bios-pxe-no-arch", fullPolicy, PXE, 0, false, Decision{BootFile: "undionly.kpxe", NextServer: true}},
		{"edk2-pxe-x64", fullPolicy, PXE, iana.EFI_X86_64, true, Decision{BootFile: "ipxe.efi", NextServer: true}},
		{"efi-bc-pxe", fullPolicy, PXE, iana.EFI_BC, true, Decision{BootFile: "ipxe.efi", NextServer: true}},
		{"efi-ia32-pxe", fullPolicy, PXE, iana.EFI_IA32, true, Decision{BootFile: "ipxe-ia32.efi", NextServer: true}},
		{"efi-ia32-pxe", sparsePolicy, PXE, iana.EFI_IA32, true, Decision{}},
		{"efi-arm64-pxe", fullPolicy, PXE, iana.EFI_ARM64, true, Decision{BootFile: "ipxe-arm64.efi", NextServer: true}},
		{"efi-arm64-pxe", sparsePolicy, PXE, iana.EFI_ARM64, true, Decision{}},
		{"efi-arm32-pxe", fullPolicy, PXE, iana.EFI_ARM32, true, Decision{}},
		{"http-x64", fullPolicy, HTTPBoot, iana.EFI_X86_64_HTTP, true, Decision{BootFile: "http://10.0.0.1:4081/tftp/ipxe.efi", HTTPClient: true}},
		{"http-arm64", fullPolicy, HTTPBoot, iana.EFI_ARM64_HTTP, true, Decision{BootFile: "http://10.0.0.1:4081/tftp/ipxe-arm64.efi", HTTPClient: true}},
		{"http-arm64", sparsePolicy, HTTPBoot, iana.EFI_ARM64_HTTP, true, Decision{HTTPClient: true}},
		{"http-no-arch", fullPolicy, HTTPBoot, 0, false, Decision{HTTPClient: true}},
		{"ipxe-bios-rom", fullPolicy, IPXE, iana.INTEL_X86PC, true, Decision{BootFile: "http://10.0.0.1:4081/boot.ipxe", IPXEOptions: true}},
		{"ipxe-efi", fullPolicy, IPXE, iana.EFI_X86_64, true, Decision{BootFile: "http://10.0.0.1:4081/boot.ipxe", IPXEOptions: true}},
		{"ipxe-user-class-only", fullPolicy, IPXE, 0, false, Decision{BootFile: "http://10.0.0.1:4081/boot.ipxe", IPXEOptions: true}},
		{"ipxe-rfc3004", fullPolicy, IPXE, 0, false, Decision{BootFile: "http://10.0.0.1:4081/boot.ipxe", IPXEOptions: true}},
		{"ipxe-opt175-only", fullPolicy, IPXE, 0, false, Decision{BootFile: "http://10.0.0.1:4081/boot.ipxe", IPXEOptions: true}},
		{"initrd-udhcpc", fullPolicy, Plain, 0, false, Decision{}},
		{"plain", fullPolicy, Plain, 0, false, Decision{}},
	}
	for _, tc := range cases {
		name := tc.kind
		if tc.policy.EFI32 == "" {
			name += "/sparse"
		}
		t.Run(name, func(t *testing.T) {
			req := firmwarePacket(t, tc.kind)
			c := Classify(req)
			if c.Firmware != tc.firmware || c.HasArch != tc.hasArch || c.Arch != tc.arch {
				t.Fatalf("Classify = %+v (%s), want firmware %s arch %d/%v", c, c.Firmware, tc.firmware, tc.arch, tc.hasArch)
			}
			got := Decide(c, false, tc.policy)
			if got.Reason == "" {
				t.Errorf("Decide gave no reason: %+v", got)
			}
			got.Reason = ""
			if got != tc.want {
				t.Errorf("Decide = %+v, want %+v", got, tc.want)
			}

			// Installed: silence, whatever the firmware.
			for _, answerIPXE := range []bool{false, true} {
				p := tc.policy
				p.AnswerInstalledIPXE = answerIPXE
				got := Decide(c, true, p)
				if answerIPXE && c.Firmware == IPXE {
					// iPXE of an installed machine gets the script URL
					// (which answers a local-boot script).
					if got.Ignore || got.BootFile != p.ScriptURL || !got.IPXEOptions {
						t.Errorf("installed, AnswerInstalledIPXE: Decide = %+v, want the script URL", got)
					}
					continue
				}
				if !got.Ignore || got.BootFile != "" || got.Reason == "" {
					t.Errorf("installed (AnswerInstalledIPXE=%v): Decide = %+v, want Ignore", answerIPXE, got)
				}
			}
		})
	}
}

func TestFirmwareString(t *testing.T) {
	for f, want := range map[Firmware]string{Plain: "plain", PXE: "pxe", HTTPBoot: "httpboot", IPXE: "ipxe"} {
		if f.String() != want {
			t.Errorf("%d.String() = %q, want %q", f, f.String(), want)
		}
	}
}

// FuzzDecide feeds arbitrary packets to the boot decision: it must never
// panic, never answer an installed machine unless told to answer its iPXE,
// and only ever hand PXE firmware one of the configured file names.
func FuzzDecide(f *testing.F) {
	for kind := range firmware {
		f.Add(firmwarePacket(f, kind).ToBytes(), false, false)
		f.Add(firmwarePacket(f, kind).ToBytes(), true, false)
		f.Add(firmwarePacket(f, kind).ToBytes(), true, true)
	}
	f.Add([]byte{}, false, false)
	f.Add(make([]byte, 240), true, true)
	f.Fuzz(func(t *testing.T, data []byte, installed, answerIPXE bool) {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		p := fullPolicy
		p.AnswerInstalledIPXE = answerIPXE
		c := Classify(req)
		d := Decide(c, installed, p)
		if d.Reason == "" {
			t.Errorf("no reason: %+v", d)
		}
		if installed && !answerIPXE && !d.Ignore {
			t.Fatalf("installed machine answered: %+v for %+v", d, c)
		}
		if d.Ignore {
			if !installed || d.BootFile != "" {
				t.Fatalf("ignored a machine that is not installed, or with a boot file: %+v", d)
			}
			return
		}
		if installed && c.Firmware != IPXE {
			t.Fatalf("installed %s firmware answered: %+v", c.Firmware, d)
		}
		switch c.Firmware {
		case PXE:
			switch d.BootFile {
			case "", p.BIOS, p.EFI64, p.EFI32, p.ARM64:
			default:
				t.Fatalf("PXE boot file %q is not a configured name", d.BootFile)
			}
			if d.NextServer != (d.BootFile != "") || d.IPXEOptions || d.HTTPClient {
				t.Fatalf("PXE decision %+v", d)
			}
		case HTTPBoot:
			switch d.BootFile {
			case "", p.HTTPBase + p.BIOS, p.HTTPBase + p.EFI64, p.HTTPBase + p.EFI32, p.HTTPBase + p.ARM64:
			default:
				t.Fatalf("HTTP boot file %q is not a configured name", d.BootFile)
			}
			if !d.HTTPClient || d.NextServer {
				t.Fatalf("HTTP boot decision %+v", d)
			}
		case IPXE:
			if d.BootFile != p.ScriptURL || !d.IPXEOptions {
				t.Fatalf("iPXE decision %+v", d)
			}
		case Plain:
			if d != (Decision{Reason: d.Reason}) {
				t.Fatalf("plain client got %+v", d)
			}
		default:
			t.Fatalf("Classify gave firmware %d", c.Firmware)
		}
	})
}
