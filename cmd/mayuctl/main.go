// Command mayuctl is the admin CLI of mayu: it lists machines, shows one,
// pre-registers, reinstalls, sets metadata, deletes, and shows the cluster
// configuration the replicas publish. It talks to any replica's admin API.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const (
	defaultServer    = "http://127.0.0.1:4080"
	defaultTokenFile = "/etc/mayu/admin-token"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one mayuctl subcommand.
type command struct {
	args    string // shown in usage after the command name
	summary string
	run     func(c *cli, args []string) error
}

var commands map[string]*command

// order is how commands are listed in the usage text.
var order = []string{"list", "status", "watch", "add", "reinstall", "set-metadata", "delete", "leases", "replicas", "config", "version", "help"}

func init() {
	// Assigned in init because the help command refers to the table.
	commands = map[string]*command{
		"list":         {args: "[-o table|json]", summary: "list machines, state and address", run: (*cli).list},
		"status":       {args: "ID [-o text|json]", summary: "show one machine with its metadata and history", run: (*cli).status},
		"add":          {args: "ID [--mac MAC]...", summary: "pre-register a machine (its id is its lower-cased SMBIOS serial)", run: (*cli).add},
		"reinstall":    {args: "ID", summary: "install a machine again at its next network boot", run: (*cli).reinstall},
		"set-metadata": {args: "ID KEY=VALUE...", summary: "set metadata of a machine; KEY= deletes the key", run: (*cli).setMetadata},
		"delete":       {args: "[--force] ID", summary: "delete a machine, freeing its address and profile slot (--force for an installed one)", run: (*cli).delete},
		"watch":        {args: "[-o text|json]", summary: "follow machine state changes as they happen (Ctrl-C ends)", run: (*cli).watch},
		"leases":       {args: "[-o table|json]", summary: "list the DHCP leases", run: (*cli).leases},
		"replicas":     {args: "[-o table|json]", summary: "list the replicas and show which one leads DHCP", run: (*cli).replicas},
		"config":       {args: "[-o yaml|json]", summary: "show the cluster configuration the DHCP leader publishes (secrets hidden)", run: (*cli).config},
		"version":      {summary: "print mayuctl's version", run: (*cli).version},
		"help":         {args: "[COMMAND]", summary: "show this help, or a command's", run: (*cli).help},
	}
}

// cli is one invocation.
type cli struct {
	stdout, stderr io.Writer
	ctx            context.Context
	server         string
	tokenFile      string
	tokenFileSet   bool // --token-file was given explicitly
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct {
	cmd string // "" for the global usage
	msg string
}

func (e *usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, ctx: context.Background()}
	global := flag.NewFlagSet("mayuctl", flag.ContinueOnError)
	global.SetOutput(io.Discard) // errors are reported below, once
	server := global.String("server", envOr("MAYU_SERVER", defaultServer), "admin API of any mayu replica (env MAYU_SERVER)")
	tokenFile := global.String("token-file", envOr("MAYU_TOKEN_FILE", defaultTokenFile), "file holding the admin token (env MAYU_TOKEN_FILE; MAYU_TOKEN holds the token itself)")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(stdout)
			return 0
		}
		return c.usageFail(&usageError{msg: err.Error()})
	}
	if global.NArg() == 0 {
		c.usage(stderr)
		return 2
	}
	name := global.Arg(0)
	cmd, ok := commands[name]
	if !ok {
		return c.usageFail(&usageError{msg: fmt.Sprintf("unknown command %q", name)})
	}
	c.server = strings.TrimRight(*server, "/")
	c.tokenFile = *tokenFile
	global.Visit(func(f *flag.Flag) { c.tokenFileSet = c.tokenFileSet || f.Name == "token-file" })
	if err := cmd.run(c, global.Args()[1:]); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			if ue.cmd == "" {
				ue.cmd = name
			}
			return c.usageFail(ue)
		}
		if errors.Is(err, flag.ErrHelp) {
			c.commandUsage(stdout, name)
			return 0
		}
		fmt.Fprintf(stderr, "mayuctl: %s\n", c.explain(err))
		return 1
	}
	return 0
}

// api returns a client of the admin API. The token is read only here, so
// that help and usage errors work without one.
func (c *cli) api() (*api.Client, error) {
	token, err := readToken(c.tokenFile, c.tokenFileSet)
	if err != nil {
		return nil, err
	}
	return &api.Client{BaseURL: c.server, Token: token}, nil
}

// readToken finds the admin token: an explicit --token-file first, then
// MAYU_TOKEN, then the file from MAYU_TOKEN_FILE or the default path.
func readToken(file string, fileExplicit bool) (string, error) {
	if !fileExplicit {
		if t := strings.TrimSpace(os.Getenv("MAYU_TOKEN")); t != "" {
			return t, nil
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("cannot read the admin token: %v; set --token-file or MAYU_TOKEN_FILE to the file named by node.admin_token_file, or MAYU_TOKEN to the token", err)
	}
	t := strings.TrimSpace(string(data))
	if t == "" {
		return "", fmt.Errorf("the admin token file %s is empty; it must hold the token of node.admin_token_file", file)
	}
	return t, nil
}

// explain turns an error into what the operator should do about it.
func (c *cli) explain(err error) string {
	var apiErr *api.Error
	var urlErr *url.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
		return fmt.Sprintf("the admin token was refused; check --token-file / MAYU_TOKEN (mayu said: %s)", apiErr.Message)
	case errors.As(err, &apiErr):
		return apiErr.Message
	case errors.As(err, &urlErr):
		return fmt.Sprintf("cannot reach mayu at %s: %v; is mayu running? set --server or MAYU_SERVER", c.server, urlErr.Err)
	}
	return err.Error()
}

func (c *cli) usageFail(e *usageError) int {
	fmt.Fprintf(c.stderr, "mayuctl: %s\n", e.msg)
	if e.cmd != "" {
		c.commandUsage(c.stderr, e.cmd)
	} else {
		fmt.Fprintln(c.stderr, "run `mayuctl help` for usage")
	}
	return 2
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `mayuctl manages the machines of a mayu cluster.

usage: mayuctl [--server URL] [--token-file FILE] COMMAND [ARGS]

commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, name := range order {
		fmt.Fprintf(tw, "  %s %s\t%s\n", name, commands[name].args, commands[name].summary)
	}
	tw.Flush()
	fmt.Fprintf(w, `
global flags (before the command):
  --server URL       admin API of any replica (env MAYU_SERVER, default %s)
  --token-file FILE  file holding the admin token (env MAYU_TOKEN_FILE, default %s);
                     env MAYU_TOKEN may hold the token itself
`, defaultServer, defaultTokenFile)
}

func (c *cli) commandUsage(w io.Writer, name string) {
	fmt.Fprintf(w, "usage: mayuctl %s %s\n  %s\n", name, commands[name].args, commands[name].summary)
}

// parseArgs parses fs's flags wherever they stand among the positional
// arguments, so that `status ID -o json` and `status -o json ID` both work.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops after "--": everything behind it is positional.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// oneID parses the flags of a command taking exactly one machine id.
func oneID(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 || pos[0] == "" {
		return "", &usageError{msg: "give exactly one machine id"}
	}
	return pos[0], nil
}

// outputFlag defines -o (and --output) on fs; the first allowed format is
// the default. check refuses any other after parsing.
func outputFlag(fs *flag.FlagSet, allowed ...string) (format *string, check func() error) {
	format = fs.String("o", allowed[0], "output format: "+strings.Join(allowed, " or "))
	fs.StringVar(format, "output", allowed[0], "same as -o")
	return format, func() error {
		for _, a := range allowed {
			if *format == a {
				return nil
			}
		}
		return &usageError{msg: fmt.Sprintf("unknown output format %q: use %s", *format, strings.Join(allowed, " or "))}
	}
}

// noArgs parses the flags of a command that takes no arguments but an
// output format, and returns the format and a client of the admin API.
func (c *cli) noArgs(name string, args []string, formats ...string) (string, *api.Client, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	format, check := outputFlag(fs, formats...)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", nil, err
	}
	if len(pos) != 0 {
		return "", nil, &usageError{msg: name + " takes no arguments"}
	}
	if err := check(); err != nil {
		return "", nil, err
	}
	api, err := c.api()
	return *format, api, err
}

func (c *cli) list(args []string) error {
	format, api, err := c.noArgs("list", args, "table", "json")
	if err != nil {
		return err
	}
	l, err := api.List(c.ctx)
	if err != nil {
		return err
	}
	if format == "json" {
		return c.printJSON(l)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPROFILE\tADDRESS\tHOSTNAME\tMACS\tSINCE\tLAST BOOT\tREPLICA")
	for _, m := range l.Machines {
		lastBoot := "-"
		if !m.LastBoot.IsZero() {
			lastBoot = age(now.Sub(m.LastBoot)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.State, dash(m.Profile), dash(m.InternalAddr),
			dash(m.Hostname), dash(strings.Join(m.MACs, ",")), age(now.Sub(m.Since)), lastBoot, dash(m.LastReplica))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// After the table and on stderr, so that the table stays parseable and
	// the warnings are still seen.
	for _, bad := range l.Corrupt {
		fmt.Fprintf(c.stderr, "warning: %s\n", bad.Error)
	}
	return nil
}

func (c *cli) status(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	format, check := outputFlag(fs, "text", "json")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	if err := check(); err != nil {
		return err
	}
	api, err := c.api()
	if err != nil {
		return err
	}
	m, err := api.Get(c.ctx, id)
	if err != nil {
		return err
	}
	if *format == "json" {
		return c.printJSON(m)
	}
	c.printMachine(m, time.Now())
	return nil
}

// printMachine is the readable view of one machine: every field, metadata
// sorted, history oldest first so the newest event is next to the prompt.
func (c *cli) printMachine(m *machine.Machine, now time.Time) {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, dash(v)) }
	row("ID", m.ID)
	row("State", fmt.Sprintf("%s since %s", m.State, when(m.Since, now)))
	if m.FailReason != "" {
		row("Fail reason", m.FailReason)
	}
	profile := m.Profile
	if m.ProfileSlot >= 0 {
		profile += fmt.Sprintf(" (slot %d)", m.ProfileSlot)
	}
	row("Profile", profile)
	row("Address", m.InternalAddr)
	row("Hostname", m.Hostname)
	row("Machine ID", m.MachineID)
	row("Serial", m.Serial)
	row("UUID", m.UUID)
	row("MACs", strings.Join(m.MACs, ", "))
	row("Arch", m.Arch)
	row("Generation", fmt.Sprint(m.Generation))
	row("Registered", when(m.Registered, now))
	if m.Preregistered {
		row("Added by", "an operator (pre-registered)")
	}
	lastBoot := "never"
	if !m.LastBoot.IsZero() {
		lastBoot = when(m.LastBoot, now)
	}
	row("Last boot", lastBoot)
	row("Last replica", m.LastReplica)
	tw.Flush()

	keys := make([]string, 0, len(m.Metadata))
	for k := range m.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		fmt.Fprintln(c.stdout, "Metadata:     -")
	} else {
		fmt.Fprintln(c.stdout, "Metadata:")
		tw = tabwriter.NewWriter(c.stdout, 0, 0, 1, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t= %s\n", k, m.Metadata[k])
		}
		tw.Flush()
	}

	fmt.Fprintln(c.stdout, "History:")
	tw = tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	for _, e := range m.History {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.At.Local().Format(time.RFC3339), e.State, dash(e.Replica), e.Reason)
	}
	tw.Flush()
}

// macList collects repeated --mac flags.
type macList []string

func (l *macList) String() string     { return strings.Join(*l, ",") }
func (l *macList) Set(s string) error { *l = append(*l, s); return nil }

func (c *cli) add(args []string) error {
	fs := flag.NewFlagSet("add", flag.ContinueOnError)
	var macs macList
	fs.Var(&macs, "mac", "a MAC address of the machine (repeatable)")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	api, err := c.api()
	if err != nil {
		return err
	}
	m, err := api.Add(c.ctx, id, macs)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "added %s: address %s, profile %s, hostname %s", m.ID, m.InternalAddr, m.Profile, m.Hostname)
	if len(m.MACs) > 0 {
		fmt.Fprintf(c.stdout, ", MACs %s", strings.Join(m.MACs, ", "))
	}
	fmt.Fprintln(c.stdout)
	return nil
}

func (c *cli) reinstall(args []string) error {
	id, err := oneID(flag.NewFlagSet("reinstall", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	api, err := c.api()
	if err != nil {
		return err
	}
	m, err := api.Reinstall(c.ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s is %s (install generation %d): its next network boot installs it again\n", m.ID, m.State, m.Generation)
	return nil
}

func (c *cli) setMetadata(args []string) error {
	pos, err := parseArgs(flag.NewFlagSet("set-metadata", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return &usageError{msg: "give a machine id and at least one KEY=VALUE"}
	}
	kv := map[string]string{}
	for _, a := range pos[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return &usageError{msg: fmt.Sprintf("%q is not KEY=VALUE (KEY= deletes the key)", a)}
		}
		kv[k] = v
	}
	api, err := c.api()
	if err != nil {
		return err
	}
	m, err := api.SetMetadata(c.ctx, pos[0], kv)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(m.Metadata))
	for k := range m.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(c.stdout, "metadata of %s:\n", m.ID)
	for _, k := range keys {
		fmt.Fprintf(c.stdout, "  %s=%s\n", k, m.Metadata[k])
	}
	return nil
}

func (c *cli) delete(args []string) error {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	force := fs.Bool("force", false, "delete even an installed or running machine")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	api, err := c.api()
	if err != nil {
		return err
	}
	if err := api.Delete(c.ctx, id, *force); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "deleted %s; its address and profile slot are free again\n", id)
	return nil
}

func (c *cli) config(args []string) error {
	format, api, err := c.noArgs("config", args, "yaml", "json")
	if err != nil {
		return err
	}
	v, err := api.Config(c.ctx)
	if err != nil {
		return err
	}
	if format == "json" {
		return c.printJSON(v)
	}
	// YAML with the config file's own key names, so it can be compared with
	// the file on a replica.
	enc := yaml.NewEncoder(c.stdout)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}

func (c *cli) leases(args []string) error {
	format, api, err := c.noArgs("leases", args, "table", "json")
	if err != nil {
		return err
	}
	ls, err := api.Leases(c.ctx)
	if err != nil {
		return err
	}
	if format == "json" {
		return c.printJSON(ls)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tMAC\tMACHINE\tHOSTNAME\tEXPIRES\tGRANTED BY")
	for _, l := range ls {
		expires := "in " + age(l.Expiry.Sub(now))
		if l.Expired {
			expires = "expired " + age(now.Sub(l.Expiry)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.IP, l.MAC, dash(l.Machine), dash(l.Hostname), expires, dash(l.Leader))
	}
	return tw.Flush()
}

func (c *cli) watch(args []string) error {
	format, client, err := c.noArgs("watch", args, "text", "json")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(c.stderr, "following machine state changes (Ctrl-C ends)")
	return client.Watch(ctx, func(e api.Event) {
		if format == "json" {
			c.printJSON(e)
			return
		}
		change := string(e.State)
		switch {
		case e.Deleted:
			change = "deleted"
		case e.PrevState == "":
			change = "registered, " + change
		default:
			change = string(e.PrevState) + " -> " + change
		}
		line := fmt.Sprintf("%s  %s  %s", e.Time.Local().Format(time.DateTime), e.ID, change)
		if e.Replica != "" {
			line += "  by " + e.Replica
		}
		if e.Reason != "" {
			line += ": " + e.Reason
		}
		fmt.Fprintln(c.stdout, line)
	})
}

func (c *cli) replicas(args []string) error {
	format, api, err := c.noArgs("replicas", args, "table", "json")
	if err != nil {
		return err
	}
	v, err := api.Replicas(c.ctx)
	if err != nil {
		return err
	}
	if format == "json" {
		return c.printJSON(v)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tCONFIG\tVERSION\tADVERTISE\tADMIN\tUP")
	for _, r := range v.Replicas {
		role := "follower"
		switch {
		case r.Leader:
			role = "leader"
		case !r.DHCP:
			role = "no-dhcp"
		}
		cfg := short(r.ConfigHash)
		if !r.ConfigMatches {
			cfg += " MISMATCH"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, role, cfg, dash(r.Version), dash(r.Advertise), dash(r.Admin), age(now.Sub(r.Started)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if v.Leader == "" {
		fmt.Fprintln(c.stderr, "warning: no replica leads DHCP now: no machine can network-boot (is etcd healthy? do the replicas' configurations agree?)")
	}
	for _, r := range v.Replicas {
		if !r.ConfigMatches {
			fmt.Fprintf(c.stderr, "warning: %s's cluster configuration differs from the leader's (%s): it will not take over DHCP; deploy the same cluster: section to it\n", r.Name, short(v.PublishedHash))
		}
	}
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func (c *cli) version(args []string) error {
	if len(args) != 0 {
		return &usageError{msg: "version takes no arguments"}
	}
	fmt.Fprintf(c.stdout, "mayuctl %s\n", version)
	return nil
}

func (c *cli) help(args []string) error {
	switch len(args) {
	case 0:
		c.usage(c.stdout)
	case 1:
		if _, ok := commands[args[0]]; !ok {
			return &usageError{msg: fmt.Sprintf("unknown command %q", args[0])}
		}
		c.commandUsage(c.stdout, args[0])
	default:
		return &usageError{msg: "help takes at most one command"}
	}
	return nil
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // a terminal, not a web page
	return enc.Encode(v)
}

// age is a short duration like kubectl shows: 42s, 3m12s, 5h3m, 3d4h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0 // clocks of replicas and operator differ a little
	}
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// when is a time with how long ago it was.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), age(now.Sub(t)))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
