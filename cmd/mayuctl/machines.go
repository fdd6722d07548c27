package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/machine"
)

var states = []string{string(machine.Configured), string(machine.Installing), string(machine.Installed),
	string(machine.Running), string(machine.Failed)}

func (c *cli) listCmd() *cobra.Command {
	var state, profile string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list machines: state, profile, address, since, last boot",
		Long: `List the registered machines, oldest first. Records mayu cannot read are
reported on stderr after the table, so that the table stays parseable.

-o wide adds serial, UUID, architecture, install generation and fail reason;
-o json and -o yaml print the admin API's answer, corrupt records included.`,
		Example: `  mayuctl list
  mayuctl list --state failed -o wide
  mayuctl list --profile core -o json`,
		Args: noArgs,
		RunE: call(false, func(cmd *cobra.Command, _ []string) error {
			if state != "" && !machine.State(state).Valid() {
				return usagef("unknown state %q: use %s", state, strings.Join(states, ", "))
			}
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			l, err := client.List(cmd.Context())
			if err != nil {
				return err
			}
			kept := l.Machines[:0]
			for _, m := range l.Machines {
				if (state == "" || string(m.State) == state) && (profile == "" || m.Profile == profile) {
					kept = append(kept, m)
				}
			}
			l.Machines = kept
			if done, err := c.printData(l); done {
				return err
			}
			if err := c.machineTable(l.Machines, c.format() == "wide"); err != nil {
				return err
			}
			for _, bad := range l.Corrupt {
				fmt.Fprintf(c.stderr, "warning: %s\n", clean(bad.Error))
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&state, "state", "", "only machines in this state: "+strings.Join(states, ", "))
	cmd.Flags().StringVar(&profile, "profile", "", "only machines of this profile")
	_ = cmd.RegisterFlagCompletionFunc("state", fixed(states...))
	return cmd
}

// machineTable prints machines as rows; wide adds what identifies the
// hardware and the install.
func (c *cli) machineTable(ms []*machine.Machine, wide bool) error {
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	if wide {
		fmt.Fprintln(tw, "ID\tSTATE\tPROFILE\tADDRESS\tHOSTNAME\tMACS\tSERIAL\tUUID\tARCH\tGENERATION\tSINCE\tLAST BOOT\tREPLICA\tFAIL REASON")
	} else {
		fmt.Fprintln(tw, "ID\tSTATE\tPROFILE\tADDRESS\tHOSTNAME\tMACS\tSINCE\tLAST BOOT\tREPLICA")
	}
	for _, m := range ms {
		lastBoot := "-"
		if !m.LastBoot.IsZero() {
			lastBoot = age(now.Sub(m.LastBoot)) + " ago"
		}
		macs := dash(cleanJoin(m.MACs, ","))
		if wide {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", dash(m.ID), dash(string(m.State)),
				dash(m.Profile), dash(m.InternalAddr), dash(m.Hostname), macs, dash(m.Serial), dash(m.UUID), dash(m.Arch),
				m.Generation, age(now.Sub(m.Since)), lastBoot, dash(m.LastReplica), dash(m.FailReason))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(m.ID), dash(string(m.State)), dash(m.Profile),
			dash(m.InternalAddr), dash(m.Hostname), macs, age(now.Sub(m.Since)), lastBoot, dash(m.LastReplica))
	}
	return tw.Flush()
}

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "show one machine with its metadata and history",
		Long: `Show every field of one machine, its metadata sorted by key and its
history oldest first, so that the newest event is next to the prompt.
Exit status 3 when the machine is not registered.`,
		Example: `  mayuctl status 5cg1234xyz
  mayuctl status 5cg1234xyz -o json`,
		Args:              oneID,
		ValidArgsFunction: c.completeMachine,
		RunE: call(true, func(cmd *cobra.Command, args []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			m, err := client.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if done, err := c.printData(m); done {
				return err
			}
			c.printMachine(m, time.Now())
			return nil
		}),
	}
}

// printMachine is the readable view of one machine: every field, metadata
// sorted, history oldest first.
func (c *cli) printMachine(m *machine.Machine, now time.Time) {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", dash(m.ID))
	row("State", fmt.Sprintf("%s since %s", dash(string(m.State)), when(m.Since, now)))
	if m.FailReason != "" {
		row("Fail reason", clean(m.FailReason))
	}
	profile := dash(m.Profile)
	if m.ProfileSlot >= 0 {
		profile += fmt.Sprintf(" (slot %d)", m.ProfileSlot)
	}
	row("Profile", profile)
	row("Address", dash(m.InternalAddr))
	row("Hostname", dash(m.Hostname))
	row("Machine ID", dash(m.MachineID))
	row("Serial", dash(m.Serial))
	row("UUID", dash(m.UUID))
	row("MACs", dash(cleanJoin(m.MACs, ", ")))
	row("Arch", dash(m.Arch))
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
	row("Last replica", dash(m.LastReplica))
	tw.Flush()

	keys := sortedKeys(m.Metadata)
	if len(keys) == 0 {
		fmt.Fprintln(c.stdout, "Metadata:     -")
	} else {
		fmt.Fprintln(c.stdout, "Metadata:")
		tw = tabwriter.NewWriter(c.stdout, 0, 0, 1, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t= %s\n", clean(k), clean(m.Metadata[k]))
		}
		tw.Flush()
	}

	// The digests it was (or is being) installed with, in full: they are
	// compared with `sha256sum` output and artifact digests.
	roles := sortedKeys(m.Artifacts)
	if len(roles) == 0 {
		fmt.Fprintln(c.stdout, "Installed with: -")
	} else {
		fmt.Fprintln(c.stdout, "Installed with:")
		tw = tabwriter.NewWriter(c.stdout, 0, 0, 1, ' ', 0)
		for _, r := range roles {
			fmt.Fprintf(tw, "  %s\tsha256:%s\n", clean(r), clean(m.Artifacts[r]))
		}
		tw.Flush()
	}

	fmt.Fprintln(c.stdout, "History:")
	tw = tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	for _, e := range m.History {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.At.Local().Format(time.RFC3339), dash(string(e.State)), dash(e.Replica), clean(e.Reason))
	}
	tw.Flush()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// maxAddFile bounds what add -f reads; a thousand machines take far less.
const maxAddFile = 16 << 20

// addEntry is one machine of add -f's file.
type addEntry struct {
	ID   string   `yaml:"id"`
	MACs []string `yaml:"macs"`
}

// addResult is what add -f prints for one machine with -o json or yaml.
type addResult struct {
	ID      string           `json:"id"`
	Machine *machine.Machine `json:"machine,omitempty"`
	Error   string           `json:"error,omitempty"`
}

func (c *cli) addCmd() *cobra.Command {
	var macs []string
	var file string
	cmd := &cobra.Command{
		Use:   "add (ID [--mac MAC]... | -f FILE)",
		Short: "pre-register machines (a machine's id is its lower-cased SMBIOS serial)",
		Long: `Pre-register a machine with the MACs it is known by, or with -f every
machine of a YAML or JSON file (- reads stdin): a list of {id, macs}.

Machines of a file are added in order, one result line each; a machine that
cannot be added is reported and the others are still added. The exit status
is 1 if any could not be added. With -o json or -o yaml, add -f prints a list
of {id, machine} or {id, error}.`,
		Example: `  mayuctl add 5cg1234xyz --mac 52:54:00:12:34:56 --mac 52:54:00:12:34:57
  mayuctl add -f machines.yaml
  cat machines.json | mayuctl add -f - -o json

machines.yaml:
  - id: 5cg1234xyz
    macs: [52:54:00:12:34:56]
  - id: 5cg1234xz0`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case file != "" && (len(args) > 0 || len(macs) > 0):
				return usagef("give either -f FILE or one machine id with its --mac flags, not both")
			case file == "" && len(args) != 1:
				return usagef("give exactly one machine id, or -f FILE")
			}
			return nil
		},
		RunE: call(false, func(cmd *cobra.Command, args []string) error {
			if file != "" {
				return c.addFile(cmd, file)
			}
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			m, err := client.Add(cmd.Context(), args[0], macs)
			if err != nil {
				return err
			}
			if done, err := c.printData(m); done {
				return err
			}
			fmt.Fprintln(c.stdout, c.added(m))
			return nil
		}),
	}
	cmd.Flags().StringArrayVar(&macs, "mac", nil, "a MAC address of the machine (repeatable)")
	cmd.Flags().StringVarP(&file, "file", "f", "", "add every machine of this YAML or JSON file (- for stdin)")
	_ = cmd.RegisterFlagCompletionFunc("mac", cobra.NoFileCompletions)
	_ = cmd.MarkFlagFilename("file", "yaml", "yml", "json")
	return cmd
}

// added is the result line of an added machine; wide adds what identifies
// its install.
func (c *cli) added(m *machine.Machine) string {
	line := fmt.Sprintf("added %s: address %s, profile %s, hostname %s", dash(m.ID), dash(m.InternalAddr), dash(m.Profile), dash(m.Hostname))
	if len(m.MACs) > 0 {
		line += ", MACs " + cleanJoin(m.MACs, ", ")
	}
	if c.format() == "wide" {
		line += fmt.Sprintf(", machine-id %s, state %s, generation %d", dash(m.MachineID), dash(string(m.State)), m.Generation)
	}
	return line
}

// addFile adds every machine of a file, in order, past failures.
func (c *cli) addFile(cmd *cobra.Command, file string) error {
	entries, err := c.readAddFile(file)
	if err != nil {
		return err
	}
	client, err := c.client(cmd)
	if err != nil {
		return err
	}
	var results []addResult
	failed := 0
	for _, e := range entries {
		m, err := client.Add(cmd.Context(), e.ID, e.MACs)
		r := addResult{ID: e.ID, Machine: m}
		if err != nil {
			failed++
			r.Error = c.explain(err)
		}
		results = append(results, r)
		if c.format() == "json" || c.format() == "yaml" {
			continue // printed at the end, as one list
		}
		if err != nil {
			fmt.Fprintf(c.stdout, "failed %s: %s\n", dash(e.ID), r.Error)
		} else {
			fmt.Fprintln(c.stdout, c.added(m))
		}
	}
	if _, err := c.printData(results); err != nil {
		return err
	}
	if failed > 0 {
		return &callError{code: exitFailed, err: fmt.Errorf("%d of %d machines could not be added", failed, len(entries))}
	}
	return nil
}

// readAddFile reads add -f's file: a YAML or JSON list of {id, macs}.
// Anything wrong with it is a usage error, and nothing is added.
func (c *cli) readAddFile(file string) ([]addEntry, error) {
	var r io.Reader = c.stdin
	name := "stdin"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, usagef("%v", err)
		}
		defer f.Close()
		r, name = f, file
	}
	data, err := io.ReadAll(io.LimitReader(r, maxAddFile+1))
	if err != nil {
		return nil, usagef("reading %s: %v", name, err)
	}
	if len(data) > maxAddFile {
		return nil, usagef("%s is larger than %d bytes", name, maxAddFile)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true) // a typo ("mac:") is an error, not a machine without MACs
	var entries []addEntry
	if err := dec.Decode(&entries); err != nil && !errors.Is(err, io.EOF) {
		return nil, usagef("%s is not a YAML or JSON list of {id, macs}: %v", name, err)
	}
	if len(entries) == 0 {
		return nil, usagef("%s lists no machines; it must be a YAML or JSON list of {id, macs}", name)
	}
	for i, e := range entries {
		if e.ID == "" {
			return nil, usagef("machine %d of %s has no id", i+1, name)
		}
	}
	return entries, nil
}

func (c *cli) reinstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reinstall ID",
		Short: "install a machine again at its next network boot",
		Long: `Send a machine back to configured: its next network boot installs it
again, with a new install generation and token. Exit status 3 when the
machine is not registered.`,
		Example:           `  mayuctl reinstall 5cg1234xyz`,
		Args:              oneID,
		ValidArgsFunction: c.completeMachine,
		RunE: call(true, func(cmd *cobra.Command, args []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			m, err := client.Reinstall(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if done, err := c.printData(m); done {
				return err
			}
			line := fmt.Sprintf("%s is %s (install generation %d): its next network boot installs it again", dash(m.ID), dash(string(m.State)), m.Generation)
			if c.format() == "wide" {
				line += fmt.Sprintf(" (address %s, hostname %s, MACs %s)", dash(m.InternalAddr), dash(m.Hostname), dash(cleanJoin(m.MACs, ", ")))
			}
			fmt.Fprintln(c.stdout, line)
			return nil
		}),
	}
}

func (c *cli) setMetadataCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "set-metadata ID KEY=VALUE...",
		Short: "set metadata of a machine; KEY= deletes the key",
		Long: `Set metadata keys of a machine, which its templates see. KEY= deletes the
key. Exit status 3 when the machine is not registered.`,
		Example: `  mayuctl set-metadata 5cg1234xyz role=worker rack=b12
  mayuctl set-metadata 5cg1234xyz rack=`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("give a machine id and at least one KEY=VALUE")
			}
			for _, a := range args[1:] {
				if k, _, ok := strings.Cut(a, "="); !ok || k == "" {
					return usagef("%s is not KEY=VALUE (KEY= deletes the key)", clean(a))
				}
			}
			return nil
		},
		ValidArgsFunction: c.completeMachine,
		RunE: call(true, func(cmd *cobra.Command, args []string) error {
			kv := map[string]string{}
			for _, a := range args[1:] {
				k, v, _ := strings.Cut(a, "=")
				kv[k] = v
			}
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			m, err := client.SetMetadata(cmd.Context(), args[0], kv)
			if err != nil {
				return err
			}
			if done, err := c.printData(m); done {
				return err
			}
			fmt.Fprintf(c.stdout, "metadata of %s:\n", dash(m.ID))
			for _, k := range sortedKeys(m.Metadata) {
				fmt.Fprintf(c.stdout, "  %s=%s\n", clean(k), clean(m.Metadata[k]))
			}
			return nil
		}),
	}
}

func (c *cli) deleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete ID [--force]",
		Short: "delete a machine, freeing its address and profile slot",
		Long: `Delete a machine, freeing its address and profile slot. An installed or
running machine needs --force: once deleted, its next network boot installs
it again and its address may go to another machine. Exit status 3 when the
machine is not registered.`,
		Example: `  mayuctl delete 5cg1234xyz
  mayuctl delete --force 5cg1234xyz`,
		Args:              oneID,
		ValidArgsFunction: c.completeMachine,
		RunE: call(true, func(cmd *cobra.Command, args []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			if err := client.Delete(cmd.Context(), args[0], force); err != nil {
				return err
			}
			if done, err := c.printData(api.Deleted{ID: args[0]}); done {
				return err
			}
			fmt.Fprintf(c.stdout, "deleted %s; its address and profile slot are free again\n", clean(args[0]))
			return nil
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even an installed or running machine")
	return cmd
}

func (c *cli) watchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "follow machine state changes as they happen (Ctrl-C ends)",
		Long: `Print every machine state change as it happens, until Ctrl-C or, with an
explicit --timeout, until that time has passed (then exit status 0).
-o json prints one JSON object per change, -o yaml one YAML document.`,
		Example: `  mayuctl watch
  mayuctl watch -o json --timeout 10m`,
		Args: noArgs,
		RunE: call(false, func(cmd *cobra.Command, _ []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if cmd.Flags().Changed("timeout") && c.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.timeout)
				defer cancel()
			}
			fmt.Fprintln(c.stderr, "following machine state changes (Ctrl-C ends)")
			return client.Watch(ctx, c.printEvent)
		}),
	}
}

func (c *cli) printEvent(e api.Event) {
	switch c.format() {
	case "json":
		c.printJSON(e)
		return
	case "yaml":
		fmt.Fprintln(c.stdout, "---")
		c.printYAML(e)
		return
	}
	change := dash(string(e.State))
	switch {
	case e.Deleted:
		change = "deleted"
	case e.PrevState == "":
		change = "registered, " + change
	default:
		change = clean(string(e.PrevState)) + " -> " + change
	}
	line := fmt.Sprintf("%s  %s  %s", e.Time.Local().Format(time.DateTime), dash(e.ID), change)
	if e.Replica != "" {
		line += "  by " + clean(e.Replica)
	}
	if e.Reason != "" {
		line += ": " + clean(e.Reason)
	}
	if c.format() == "wide" && len(e.MACs) > 0 {
		line += "  (MACs " + cleanJoin(e.MACs, ", ") + ")"
	}
	fmt.Fprintln(c.stdout, line)
}
