// Command mayuctl is the admin CLI of mayu: it lists machines, shows one,
// pre-registers, adds MACs, reinstalls, sets metadata, deletes, follows
// state changes, rotates the cluster secret,
// and shows the leases, the replicas and the cluster configuration they
// publish. It talks to any replica's admin API and links only its wire
// types (pkg/api), never the server.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=..."; when it
// is not, buildinfo reads what the Go toolchain recorded.
var version string

func init() { version = buildinfo.Version(version) }

const (
	defaultServer    = "http://127.0.0.1:4080"
	defaultTokenFile = "/etc/mayu/admin-token"
	defaultTimeout   = 30 * time.Second
)

// Exit statuses, documented in the root help and the README.
const (
	exitOK       = 0
	exitFailed   = 1 // the call failed: mayu answered an error or could not be reached
	exitUsage    = 2 // a mistake on the command line
	exitNotFound = 3 // the machine named is not registered
)

// Output formats of -o. "text" is the name status and watch used for
// table before, still accepted.
var formats = []string{"table", "wide", "json", "yaml"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// cli is one invocation.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	server         string
	tokenFile      string
	caCert         string // --cacert: the CA the admin API's certificate is checked against
	cert, key      string // --cert, --key: the client certificate (mutual TLS)
	output         string
	timeout        time.Duration
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// callError is a command that ran and failed; code is its exit status.
type callError struct {
	err  error
	code int
}

func (e *callError) Error() string { return e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

func run(args []string, stdin io.Reader, rawStdout, rawStderr io.Writer) int {
	// Nothing reaches the operator's terminal raw (print.go, terminal).
	stdout, stderr := &terminal{w: rawStdout}, &terminal{w: rawStderr}
	defer stdout.Flush()
	defer stderr.Flush()
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	root := c.newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	var ce *callError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "mayuctl: %s\n", c.explain(ce.err))
		return ce.code
	}
	// Anything else is a mistake on the command line: cobra's own (an
	// unknown command or flag, a missing flag value) or one of ours.
	// cobra's messages may span lines ("Did you mean this?").
	for i, line := range strings.Split(strings.TrimSpace(err.Error()), "\n") {
		if i == 0 {
			line = "mayuctl: " + line
		}
		fmt.Fprintln(stderr, clean(strings.ReplaceAll(line, "\t", "  ")))
	}
	if cmd == nil || !cmd.HasParent() {
		fmt.Fprintln(stderr, "usage: mayuctl COMMAND [ARGS] [flags]; run `mayuctl --help` for the commands")
	} else {
		fmt.Fprintf(stderr, "usage: %s\nrun `%s --help` for more\n", cmd.UseLine(), cmd.CommandPath())
	}
	return exitUsage
}

const rootHelp = `mayuctl manages the machines of a mayu cluster through the admin API of
any of its replicas.

Flags may stand anywhere on the line: "mayuctl list --server URL" and
"mayuctl --server URL list" are the same.

Environment:
  MAYU_SERVER      admin API of any replica (default ` + defaultServer + `)
  MAYU_TOKEN_FILE  file holding the admin token (default ` + defaultTokenFile + `)
  MAYU_TOKEN       the admin token itself; an explicit --token-file wins
  MAYU_CACERT      CA certificate(s) of the admin API's TLS certificate, for
                   an https:// server (default: the system's)
  MAYU_CERT, MAYU_KEY  client certificate and key, where the admin API
                   asks for one (mutual TLS); a certificate whose subject
                   has a role in the tokens file needs no token

Output (-o): table (default; status and watch print readable text, config
prints YAML), wide (table with more columns), json, yaml. Every string a
machine sent is printed in table and wide output with control characters
escaped ("\x1b[31m" rather than the raw bytes).

Exit status:
  0  success
  1  the call failed: mayu answered an error, or could not be reached
  2  usage error: unknown command or flag, bad argument or output format
  3  the machine named is not registered (status, reinstall, set-metadata,
     add-mac, delete)`

func (c *cli) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:     "mayuctl",
		Short:   "mayuctl manages the machines of a mayu cluster",
		Long:    rootHelp,
		Version: version,
		Example: `  export MAYU_SERVER=http://10.0.0.2:4080 MAYU_TOKEN_FILE=/etc/mayu/admin-token
  mayuctl list --state failed
  mayuctl status 5cg1234xyz
  mayuctl reinstall 5cg1234xyz
  source <(mayuctl completion bash)`,
		// Errors are printed once, by run, with the exit status they mean.
		SilenceErrors: true,
		SilenceUsage:  true,
		// Without a command: a usage error. An unknown command never gets
		// here; cobra refuses it, with suggestions.
		RunE:              func(*cobra.Command, []string) error { return usagef("no command given") },
		PersistentPreRunE: c.checkFlags,
	}
	root.SetVersionTemplate("mayuctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	pf := root.PersistentFlags()
	pf.StringVar(&c.server, "server", envOr("MAYU_SERVER", defaultServer), "admin API of any mayu replica (env MAYU_SERVER)")
	pf.StringVar(&c.tokenFile, "token-file", envOr("MAYU_TOKEN_FILE", defaultTokenFile), "file holding the admin token (env MAYU_TOKEN_FILE; env MAYU_TOKEN holds the token itself)")
	pf.StringVar(&c.caCert, "cacert", os.Getenv("MAYU_CACERT"), "CA certificate file the admin API's certificate is checked against (env MAYU_CACERT; default: the system's CAs)")
	pf.StringVar(&c.cert, "cert", os.Getenv("MAYU_CERT"), "client certificate file, for mutual TLS (env MAYU_CERT)")
	pf.StringVar(&c.key, "key", os.Getenv("MAYU_KEY"), "key file of --cert (env MAYU_KEY)")
	pf.StringVarP(&c.output, "output", "o", "", "output format: table, wide, json or yaml (default table)")
	pf.DurationVar(&c.timeout, "timeout", defaultTimeout, "bound on each call to mayu, 0 for none; given to watch, how long it follows")
	_ = root.RegisterFlagCompletionFunc("output", fixed(formats...))

	root.AddCommand(c.listCmd(), c.statusCmd(), c.watchCmd(), c.addCmd(), c.addMACCmd(), c.reinstallCmd(), c.setMetadataCmd(),
		c.deleteCmd(), c.leasesCmd(), c.replicasCmd(), c.configCmd(), c.rotateSecretCmd(), c.auditCmd(), c.artifactCmd(), c.versionCmd())
	root.AddCommand(c.manCmd(root))
	root.SetHelpCommand(c.helpCmd(root))
	return root
}

// checkFlags refuses bad values of the global flags before any command
// runs.
func (c *cli) checkFlags(cmd *cobra.Command, _ []string) error {
	switch c.output {
	case "", "table", "wide", "json", "yaml":
	case "text":
		c.output = "table"
	default:
		return usagef("unknown output format %q: use %s", c.output, strings.Join(formats, ", "))
	}
	if c.timeout < 0 {
		return usagef("--timeout must not be negative")
	}
	if (c.cert == "") != (c.key == "") {
		return usagef("--cert and --key go together (env MAYU_CERT and MAYU_KEY)")
	}
	return nil
}

// helpCmd replaces cobra's help command, which answers an unknown topic
// with success.
func (c *cli) helpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:     "help [COMMAND]",
		Short:   "show the help of mayuctl or of a command",
		Example: "  mayuctl help add",
		Args:    maxArgs(1, "help takes at most one command"),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("unknown command %q", strings.Join(args, " "))
			}
			target.SetOut(c.stdout)
			return target.Help()
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var names []cobra.Completion
			for _, sub := range root.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					names = append(names, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

// call wraps a command's work: what it returns is a failed call (exit 1),
// unless it is a usage error. With machine set, a 404 means the machine
// named is not registered (exit 3).
func call(machine bool, f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var ue *usageError
		var ce *callError
		var apiErr *api.Error
		switch {
		case err == nil, errors.As(err, &ue), errors.As(err, &ce):
			return err
		case machine && errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
			return &callError{err: err, code: exitNotFound}
		}
		return &callError{err: err, code: exitFailed}
	}
}

// client returns a client of the admin API. The token and the
// certificates are read only here, so that help and usage errors work
// without them.
func (c *cli) client(cmd *cobra.Command) (*api.Client, error) {
	explicit := cmd.Flags().Changed("token-file") || os.Getenv("MAYU_TOKEN_FILE") != ""
	token, err := readToken(c.tokenFile, cmd.Flags().Changed("token-file"))
	if err != nil {
		// A client certificate may stand in for a token (its subject has
		// a role in the tokens file), unless a token file was named.
		if c.cert == "" || explicit {
			return nil, err
		}
		token = ""
	}
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsCfg
	return &api.Client{
		BaseURL: strings.TrimRight(c.server, "/"),
		Token:   token,
		HTTP:    &http.Client{Timeout: c.timeout, Transport: transport},
	}, nil
}

// tlsConfig is the TLS of an https:// server: --cacert, --cert and --key.
func (c *cli) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caCert != "" {
		data, err := os.ReadFile(c.caCert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("--cacert: %s holds no PEM certificate", c.caCert)
		}
	}
	if c.cert != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("--cert / --key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if (c.caCert != "" || c.cert != "") && strings.HasPrefix(c.server, "http://") {
		return nil, fmt.Errorf("--cacert / --cert are for TLS, but --server %s is http://; use https://", c.server)
	}
	return cfg, nil
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
		return fmt.Sprintf("the admin token was refused; check --token-file / MAYU_TOKEN and, with mutual TLS, --cert / --key (mayu said: %s)", clean(apiErr.Message))
	case errors.As(err, &apiErr):
		return clean(apiErr.Message)
	case errors.As(err, &urlErr) && urlErr.Timeout():
		return fmt.Sprintf("mayu at %s did not answer within --timeout %s: %v", c.server, c.timeout, urlErr.Err)
	case errors.As(err, &urlErr):
		return fmt.Sprintf("cannot reach mayu at %s: %v; is mayu running? set --server or MAYU_SERVER", c.server, urlErr.Err)
	}
	return clean(err.Error())
}

// format is the -o of this invocation, table when none was given.
func (c *cli) format() string {
	if c.output == "" {
		return "table"
	}
	return c.output
}

// Argument checks; what they refuse is a usage error.

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments", cmd.Name())
	}
	return nil
}

func oneID(_ *cobra.Command, args []string) error {
	if len(args) != 1 || args[0] == "" {
		return usagef("give exactly one machine id")
	}
	return nil
}

func maxArgs(n int, msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > n {
			return usagef("%s", msg)
		}
		return nil
	}
}

// fixed completes one of a fixed set of words.
func fixed(words ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return words, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeMachine completes the first argument with the ids of the
// registered machines, their state as description. Anything that fails
// (no token, mayu unreachable) completes nothing, quietly.
func (c *cli) completeMachine(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	client, err := c.client(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	l, err := client.List(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []cobra.Completion
	for _, m := range l.Machines {
		if strings.HasPrefix(m.ID, toComplete) {
			ids = append(ids, cobra.CompletionWithDesc(m.ID, clean(string(m.State))))
		}
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
