// Package render turns templates into what a machine runs: the iPXE
// scripts (built in), the first-stage install script and the final config
// (operator templates from the files directory, Go text/template).
//
// Templates are parsed once at start and test-rendered against a sample
// machine, so a broken template stops mayu at start-up with the file and
// line named, rather than failing a machine mid-install. Each render goes
// to a buffer first: a machine never receives half a script.
package render

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"text/template"
	"time"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/ignition"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// Context is what templates see.
type Context struct {
	Machine *machine.Machine
	// Token authenticates every call the node makes back to mayu.
	Token string
	// MayuURL is the base URL of mayu's HTTP boot port (the advertise address).
	MayuURL string
	URLs    URLs
	Install Install
	// Image is the OS image the machine is installed with: the first
	// stage checks what it wrote against its digest.
	Image   Image
	Network Network
	Vars    map[string]string
}

// Image identifies the OS image served at URLs.Image.
type Image struct {
	SHA256 string // lower-case hex; empty when unknown (a test render)
	Size   int64  // bytes; 0 when unknown
}

// URLs a node calls, each carrying its token where one is needed.
type URLs struct {
	FirstStage string
	// Kernel, Initrd and Image are where the machine's installer and OS
	// come from: its profile's own artifacts, else cluster.install's.
	Kernel       string
	Initrd       string
	Image        string
	FinalConfig  string
	Installed    string
	Failed       string
	BootComplete string
}

// Install is what the installer writes where.
type Install struct {
	Disk string
}

// Network is the machine's static configuration on the installed OS.
type Network struct {
	Address   string // InternalAddr
	PrefixLen int
	Netmask   string
	Gateway   string
	DNS       []string
}

// Renderer holds the parsed operator templates.
type Renderer struct {
	firstStage  *template.Template
	finalConfig *template.Template
	cluster     config.Cluster
	// What each template renders (config.FormatText or FormatIgnition).
	firstStageFormat, finalConfigFormat string
	warnings                            []string // of the sample render
}

// funcs are the template functions (README, "Templates"); quote.go has
// the quoting ones.
var funcs = template.FuncMap{
	"join":       strings.Join,
	"json":       toJSON,
	"yaml":       toYAML,
	"shell":      shell,
	"shellquote": shellquote,
	"dataurl":    dataURL,
	"keyvalues":  keyValues,
	"replicas":   replicas,
}

// New parses the cluster's templates from files (rooted at the files
// directory) and test-renders them for the sample machine: a template
// that fails to execute, or renders an Ignition config that does not
// validate, stops mayu at start (and fails `mayu -check`) with the
// template's key, the path inside the config and Ignition's message.
func New(files fs.FS, cluster config.Cluster) (*Renderer, error) {
	r := &Renderer{cluster: cluster,
		firstStageFormat:  cluster.Templates.FirstStageFormat,
		finalConfigFormat: cluster.Templates.FinalConfigFormat}
	var err error
	if r.firstStage, err = parse(files, keyFirstStage, cluster.Templates.FirstStage); err != nil {
		return nil, err
	}
	if r.finalConfig, err = parse(files, keyFinalConfig, cluster.Templates.FinalConfig); err != nil {
		return nil, err
	}
	// One sample machine per profile, with that profile's tags as its
	// metadata: a template may render a key only for some profile, and a
	// misspelt one must stop mayu here, not fail every machine of that
	// profile at install.
	seen := map[string]bool{}
	for _, m := range Samples(cluster) {
		sample := r.Context(m, "sample-token", "http://192.0.2.1:4081")
		for _, t := range []struct {
			key    string
			tmpl   *template.Template
			format string
		}{{keyFirstStage, r.firstStage, r.firstStageFormat}, {keyFinalConfig, r.finalConfig, r.finalConfigFormat}} {
			_, warnings, err := execute(t.key, t.tmpl, t.format, sample)
			if err != nil {
				return nil, fmt.Errorf("test render for a sample machine of profile %q failed: %w", m.Profile, err)
			}
			for _, w := range warnings {
				msg := t.key + ": Ignition warning at " + w.String()
				if !seen[msg] {
					seen[msg] = true
					r.warnings = append(r.warnings, msg)
				}
			}
		}
	}
	return r, nil
}

// Samples are the machines New test-renders: the sample machine in the
// profile "default" and once in each configured profile, with the
// profile's tags as metadata, as a registered machine of it has.
func Samples(cluster config.Cluster) []*machine.Machine {
	out := []*machine.Machine{Sample()}
	for _, p := range cluster.Profiles {
		m := Sample()
		m.Profile = p.Name
		m.Metadata = make(map[string]string, len(p.Tags))
		for k, v := range p.Tags {
			m.Metadata[k] = v
		}
		out = append(out, m)
	}
	return out
}

// The configuration keys of the operator templates, which every render
// error starts with.
const (
	keyFirstStage  = "cluster.templates.first_stage"
	keyFinalConfig = "cluster.templates.final_config"
)

// Warnings are what Ignition warned of in the sample machine's configs
// (key: path: message): they do not stop mayu, `mayu -check` prints them
// and a replica logs them at start.
func (r *Renderer) Warnings() []string { return r.warnings }

func parse(files fs.FS, key, name string) (*template.Template, error) {
	data, err := fs.ReadFile(files, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	t, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return t, nil
}

// Sample is the machine templates are test-rendered with at start-up.
func Sample() *machine.Machine {
	m := machine.New("sample-serial", time.Unix(0, 0).UTC(), "check")
	m.MachineID = strings.Repeat("0", 32)
	m.Hostname = m.MachineID[:16]
	m.MACs = []string{"52:54:00:00:00:01"}
	m.InternalAddr = "192.0.2.10"
	m.Profile = "default"
	return m
}

// Context builds what templates see for m.
func (r *Renderer) Context(m *machine.Machine, token, mayuURL string) Context {
	node := mayuURL + "/machines/" + m.ID + "/"
	q := "?token=" + token
	st := r.cluster.Static
	nw := Network{Address: m.InternalAddr, PrefixLen: st.Subnet.Bits()}
	if st.Subnet.IsValid() {
		nw.Netmask = netmask(st.Subnet.Bits())
	}
	if st.Gateway.IsValid() {
		nw.Gateway = st.Gateway.String()
	}
	for _, d := range st.DNS {
		nw.DNS = append(nw.DNS, d.String())
	}
	vars := make(map[string]string, len(r.cluster.TemplateVars))
	for k, v := range r.cluster.TemplateVars {
		vars[k] = v
	}
	return Context{
		Machine: nodeTextPlain(m),
		Token:   token,
		MayuURL: mayuURL,
		URLs: URLs{
			FirstStage:   node + "first-stage" + q,
			Kernel:       BootURL(mayuURL, r.cluster, m.Profile, "kernel"),
			Initrd:       BootURL(mayuURL, r.cluster, m.Profile, "initrd"),
			Image:        BootURL(mayuURL, r.cluster, m.Profile, "image"),
			FinalConfig:  node + "final-config" + q,
			Installed:    node + "installed" + q,
			Failed:       node + "failed" + q,
			BootComplete: node + "boot-complete" + q,
		},
		Install: Install{Disk: r.cluster.Install.Disk},
		Network: nw,
		Vars:    vars,
	}
}

// BootURL is where a machine of profile fetches role (kernel, initrd,
// image): /boot/<role> for cluster.install's, /boot/artifacts/<name> for
// a profile's own artifact.
func BootURL(mayuURL string, c config.Cluster, profile, role string) string {
	src := c.Source(profile, role)
	if src != c.Source("", role) {
		if name, ok := config.ArtifactName(src); ok {
			return mayuURL + "/boot/artifacts/" + name
		}
	}
	return mayuURL + "/boot/" + role
}

// nodeTextPlain is a copy of m whose fields that a machine sent (serial,
// UUID, architecture, failure reasons) passed hostile.Plain: templates
// render scripts, and node text enters a script only through the
// allow-list. Everything else in the record is mayu's or the operator's.
func nodeTextPlain(m *machine.Machine) *machine.Machine {
	c := *m
	c.Serial, c.UUID, c.Arch, c.FailReason = hostile.Plain(m.Serial), hostile.Plain(m.UUID), hostile.Plain(m.Arch), hostile.Plain(m.FailReason)
	c.History = make([]machine.Event, len(m.History))
	for i, e := range m.History {
		e.Reason = hostile.Plain(e.Reason)
		c.History[i] = e
	}
	return &c
}

func netmask(bits int) string {
	var b [4]byte
	for i := 0; i < bits && i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b).String()
}

// FirstStage renders what the installer runs: a script, or the
// installer's Ignition config. Its errors are *Error.
func (r *Renderer) FirstStage(c Context) ([]byte, error) {
	out, _, err := execute(keyFirstStage, r.firstStage, r.firstStageFormat, c)
	return out, err
}

// FinalConfig renders the config written to the installed disk. Its
// errors are *Error.
func (r *Renderer) FinalConfig(c Context) ([]byte, error) {
	out, _, err := execute(keyFinalConfig, r.finalConfig, r.finalConfigFormat, c)
	return out, err
}

// FirstStageIsIgnition reports whether the first stage is an Ignition
// config (cluster.templates.first_stage_format).
func (r *Renderer) FirstStageIsIgnition() bool { return r.firstStageFormat == config.FormatIgnition }

// FinalConfigIsIgnition reports whether the final config is Ignition.
func (r *Renderer) FinalConfigIsIgnition() bool { return r.finalConfigFormat == config.FormatIgnition }

// Error is a template that could not be rendered for a machine: it failed
// to execute, or what it rendered is not a valid Ignition config (Err is
// then an *ignition.InvalidError). Either way nothing may be served: the
// machine cannot be installed as configured.
type Error struct {
	Key string // the template's configuration key
	Err error
}

func (e *Error) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// execute renders t for c; a template declared Ignition is converted and
// validated (an *ignition.InvalidError names each problem by path).
func execute(key string, t *template.Template, format string, c Context) ([]byte, []ignition.Problem, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, c); err != nil {
		return nil, nil, &Error{Key: key, Err: err}
	}
	if format != config.FormatIgnition {
		return buf.Bytes(), nil, nil
	}
	res, err := ignition.Convert(buf.Bytes())
	if err != nil {
		return nil, nil, &Error{Key: key, Err: err}
	}
	return res.JSON, res.Warnings, nil
}
