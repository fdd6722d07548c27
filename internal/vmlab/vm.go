package vmlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmware is what the VM boots with.
type Firmware string

const (
	// BIOS is SeaBIOS on qemu's "pc" machine; the NIC's option ROM is
	// iPXE (package ipxe-qemu).
	BIOS Firmware = "bios"
	// UEFI is OVMF (package ovmf) on the "q35" machine.
	UEFI Firmware = "uefi"
)

// Files the VMs need from Debian packages.
const (
	QEMU      = "qemu-system-x86_64"
	ovmfCode  = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars  = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	virtioROM = "/usr/lib/ipxe/qemu/efi-virtio.rom" // BIOS + EFI iPXE ROM for virtio-net-pci
)

// VMConfig describes one machine.
type VMConfig struct {
	Name     string
	Netns    string // the namespace holding Tap; qemu runs in it
	Tap      string // a tap device on the lab's bridge
	MAC      string
	Serial   string // SMBIOS system serial: the machine's id in mayu
	Firmware Firmware
	// FirmwarePXE boots the NIC without its iPXE option ROM: under UEFI
	// the firmware's own PXE then fetches ipxe.efi over TFTP (under BIOS
	// there would be no network boot at all).
	FirmwarePXE bool
	// HTTPBoot (UEFI) boots the NIC without its iPXE option ROM and
	// without OVMF's PXE boot options: the firmware's first network boot
	// option is then its own UEFI HTTP boot (IPv4), which asks DHCP as
	// vendor class HTTPClient and fetches the boot file from the URL it
	// gets, no TFTP.
	HTTPBoot bool
	// DiskFirst boots the disk first and the network second: the
	// machine's next start after an install where waiting for the
	// firmware to give up on the network would only cost its timeouts.
	DiskFirst bool
	Disk      string // raw disk image; created empty (DiskMiB) if missing
	DiskMiB   int    // default 512 (sparse): the OS image and room
	MemoryMiB int    // default 512
	Dir       string // OVMF variables, the QMP socket, the serial log
	// Echo, if set, gets every serial line as it arrives.
	Echo func(Line)
	// FailOn ends every wait at once when a line matches: an installer or
	// OS that reports failure, a kernel panic.
	FailOn *regexp.Regexp
}

// Line is one line of the serial console.
type Line struct {
	At   time.Duration // since qemu started
	Text string
}

func (l Line) String() string { return fmt.Sprintf("[%8.3f] %s", l.At.Seconds(), l.Text) }

// VM is a running qemu whose serial console is captured line by line.
//
// qemu runs with TCG (-accel tcg): the KVM on the machines this was built
// on is a nested PVM that triple-faults iPXE and kills OVMF (lab.md §2),
// and "accel=kvm:tcg" would pick it. -nographic puts SeaBIOS, iPXE, OVMF
// and the kernel console all on stdout, which is read here.
type VM struct {
	cfg     VMConfig
	cmd     *exec.Cmd
	start   time.Time
	logFile *os.File
	qmp     string

	mu      sync.Mutex
	lines   []Line
	cursor  int           // Expect searches from this line,
	offset  int           // from this byte of it
	changed chan struct{} // closed and replaced on each new line
	exited  bool
	waitErr error
	done    chan struct{}
}

// StartVM starts qemu.
func StartVM(cfg VMConfig) (*VM, error) {
	if cfg.DiskMiB == 0 {
		cfg.DiskMiB = 512
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 512
	}
	if cfg.Firmware == "" {
		cfg.Firmware = BIOS
	}
	if cfg.Firmware != UEFI && cfg.HTTPBoot {
		return nil, fmt.Errorf("%s: UEFI HTTP boot is OVMF's (uefi), not %s's", cfg.Name, cfg.Firmware)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.Disk); errors.Is(err, os.ErrNotExist) {
		f, err := os.Create(cfg.Disk)
		if err != nil {
			return nil, err
		}
		err = f.Truncate(int64(cfg.DiskMiB) << 20) // sparse, all zeros: no boot sector
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	v := &VM{cfg: cfg, changed: make(chan struct{}), done: make(chan struct{}), qmp: filepath.Join(cfg.Dir, "qmp.sock")}
	args := []string{"-accel", "tcg", "-m", fmt.Sprint(cfg.MemoryMiB), "-nographic", "-name", cfg.Name,
		"-smbios", "type=1,serial=" + cfg.Serial,
		"-qmp", "unix:" + v.qmp + ",server=on,wait=off"}
	switch cfg.Firmware {
	case BIOS:
		args = append(args, "-machine", "pc")
	case UEFI:
		// OVMF keeps its boot options in the variable store: one writable
		// copy per VM, kept across resets like a real machine's NVRAM.
		vars := filepath.Join(cfg.Dir, "OVMF_VARS.fd")
		if _, err := os.Stat(vars); errors.Is(err, os.ErrNotExist) {
			if err := copyFile(ovmfVars, vars); err != nil {
				return nil, err
			}
		}
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
		// Without these switches OVMF creates PXEv4, PXEv6, HTTPv4 and
		// HTTPv6 boot options for the NIC, in that order; it reads them
		// from fw_cfg at each start (edk2 OvmfPkg's PxeBcPcdLib). Debian
		// 12's OVMF has none for the HTTP ones. They do not shorten a
		// network boot nobody answers: measured in the lab with an IPv6
		// router advertiser, each remaining option, IPv6 ones included,
		// then waits ~60-75 s (lab.md §7).
		if cfg.HTTPBoot {
			args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
				"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
		}
	default:
		return nil, fmt.Errorf("unknown firmware %q", cfg.Firmware)
	}
	// Network first, disk second, as mayu expects of every machine.
	netIndex, diskIndex := "1", "2"
	if cfg.DiskFirst {
		netIndex, diskIndex = "2", "1"
	}
	nic := "virtio-net-pci,netdev=n0,mac=" + cfg.MAC + ",bootindex=" + netIndex
	if cfg.FirmwarePXE || cfg.HTTPBoot {
		nic += ",romfile="
	}
	args = append(args,
		"-netdev", "tap,id=n0,ifname="+cfg.Tap+",script=no,downscript=no",
		"-device", nic,
		"-drive", "file="+cfg.Disk+",format=raw,if=none,id=d0",
		"-device", "virtio-blk-pci,drive=d0,bootindex="+diskIndex)
	name, argv := QEMU, args
	if cfg.Netns != "" {
		name, argv = "ip", append([]string{"netns", "exec", cfg.Netns, QEMU}, args...)
	}
	v.cmd = exec.Command(name, argv...) // ip netns exec execs qemu: the pid is qemu's; stdin is /dev/null
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	v.cmd.Stdout, v.cmd.Stderr = w, w
	// Appended to: a machine started again in the same Dir keeps one log.
	if v.logFile, err = os.OpenFile(filepath.Join(cfg.Dir, "serial.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(v.logFile, "# %s %s\n", name, strings.Join(argv, " "))
	v.start = time.Now()
	if err := v.cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close()
	go v.read(r)
	return v, nil
}

// LogPath is the timestamped serial log.
func (v *VM) LogPath() string { return filepath.Join(v.cfg.Dir, "serial.log") }

var ansi = regexp.MustCompile(`\x1b\[[0-9;?=]*[A-Za-z]|\x1b[c()][0-9A-Za-z]?|\r`)

func (v *VM) read(r io.ReadCloser) {
	defer r.Close()
	buf := make([]byte, 0, 8192)
	chunk := make([]byte, 65536)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			v.add(string(buf[:i]))
			buf = buf[i+1:]
		}
		// Progress output (iPXE's dots) can go long without a newline.
		if len(buf) > 4096 {
			v.add(string(buf))
			buf = buf[:0]
		}
		if err != nil {
			break
		}
	}
	if len(buf) > 0 {
		v.add(string(buf))
	}
	err := v.cmd.Wait()
	v.mu.Lock()
	v.exited, v.waitErr = true, err
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	v.logFile.Close()
	close(v.done)
}

func (v *VM) add(raw string) {
	text := strings.TrimRight(ansi.ReplaceAllString(raw, ""), " \t")
	if strings.TrimSpace(text) == "" {
		return
	}
	l := Line{At: time.Since(v.start), Text: text}
	v.mu.Lock()
	v.lines = append(v.lines, l)
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	fmt.Fprintln(v.logFile, l)
	if v.cfg.Echo != nil {
		v.cfg.Echo(l)
	}
}

// Expect waits up to within for a line matching pattern (a regular
// expression), searching from just after the match of the previous
// Expect, so a test reads the console as the flow happens: one boot's
// markers cannot satisfy the next boot's wait. The rest of a line after
// a match counts: two markers printed without a newline between them
// (iPXE's "ok" and the kernel's first line) satisfy two waits in turn.
func (v *VM) Expect(within time.Duration, pattern string) (Line, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return Line{}, err
	}
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		v.mu.Lock()
		for i := v.cursor; i < len(v.lines); i++ {
			l := v.lines[i]
			rest := l.Text
			if i == v.cursor {
				rest = rest[v.offset:]
			}
			if v.cfg.FailOn != nil && v.cfg.FailOn.MatchString(rest) {
				v.mu.Unlock()
				return l, fmt.Errorf("%s: failure on the console while waiting for %q: %s", v.cfg.Name, pattern, l)
			}
			if m := re.FindStringIndex(rest); m != nil {
				v.offset = len(l.Text) - len(rest) + m[1]
				v.cursor = i
				if v.offset >= len(l.Text) {
					v.cursor, v.offset = i+1, 0
				}
				v.mu.Unlock()
				return l, nil
			}
		}
		if v.cursor < len(v.lines) { // read, and no match: later waits start after them
			v.cursor, v.offset = len(v.lines), 0
		}
		exited, werr, changed := v.exited, v.waitErr, v.changed
		v.mu.Unlock()
		if exited {
			return Line{}, fmt.Errorf("%s: qemu exited (%v) while waiting for %q", v.cfg.Name, werr, pattern)
		}
		select {
		case <-changed:
		case <-deadline.C:
			return Line{}, fmt.Errorf("%s: no %q on the console within %s", v.cfg.Name, pattern, within)
		}
	}
}

// Since is how long qemu has run.
func (v *VM) Since() time.Duration { return time.Since(v.start) }

// Lines is a copy of the console so far.
func (v *VM) Lines() []Line {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Line(nil), v.lines...)
}

// Tail is the console's last n lines.
func (v *VM) Tail(n int) string {
	lines := v.Lines()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Reset presses the machine's reset button (QMP system_reset), as an
// operator's IPMI power cycle would: the firmware starts again with the
// same disk and NVRAM.
func (v *VM) Reset() error {
	return v.qmpCommand("system_reset")
}

func (v *VM) qmpCommand(cmd string) error {
	c, err := net.DialTimeout("unix", v.qmp, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(c)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("qmp greeting: %w", err)
	}
	for _, ex := range []string{"qmp_capabilities", cmd} {
		if err := json.NewEncoder(c).Encode(map[string]string{"execute": ex}); err != nil {
			return err
		}
		for { // skip asynchronous events until the command's answer
			var resp map[string]json.RawMessage
			if err := dec.Decode(&resp); err != nil {
				return fmt.Errorf("qmp %s: %w", ex, err)
			}
			if e, ok := resp["error"]; ok {
				return fmt.Errorf("qmp %s: %s", ex, e)
			}
			if _, ok := resp["return"]; ok {
				break
			}
		}
	}
	return nil
}

// Stop ends qemu (SIGTERM, SIGKILL after 5 s) and waits for it.
func (v *VM) Stop() {
	if v.cmd.Process == nil {
		return
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(5 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
	}
}

// Wait waits for qemu to exit by itself or ctx to end.
func (v *VM) Wait(ctx context.Context) error {
	select {
	case <-v.done:
		return v.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Pid is qemu's process id.
func (v *VM) Pid() int { return v.cmd.Process.Pid }
