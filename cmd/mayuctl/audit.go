package main

import (
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) auditCmd() *cobra.Command {
	var machine string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "show the audit trail of changes made through the admin API",
		Long: `Show the audit trail, newest first: every change made through the admin
API (and every change a viewer was refused), with who made it (a token's
name or a client certificate's subject), what (method, route, machine,
the start of the request) and its result (the HTTP status; 0 means the
result was never recorded), when, and from where. Entries stay when their
machine is deleted; node.admin.audit sets how long they are kept.
-o wide adds the role, the replica that answered, the path and the request.`,
		Example: `  mayuctl audit
  mayuctl audit --machine 5cg1234xyz
  mayuctl audit --limit 20 -o wide`,
		Args: noArgs,
		RunE: call(false, func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 10000 {
				return usagef("--limit must be from 1 to 10000")
			}
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			l, err := client.Audit(cmd.Context(), machine, limit)
			if err != nil {
				return err
			}
			if done, err := c.printData(l.Entries); done {
				return err
			}
			wide := c.format() == "wide"
			tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
			if wide {
				fmt.Fprintln(tw, "TIME\tWHO\tVIA\tROLE\tFROM\tREPLICA\tMETHOD\tPATH\tMACHINE\tSTATUS\tREQUEST")
			} else {
				fmt.Fprintln(tw, "TIME\tWHO\tFROM\tMETHOD\tROUTE\tMACHINE\tSTATUS")
			}
			for _, e := range l.Entries {
				when := e.Time.Local().Format(time.RFC3339)
				status := strconv.Itoa(e.Status)
				if e.Status == 0 {
					status = "unknown"
				}
				// Everything stored is printed escaped: a token name or a
				// certificate subject, a path, a request body.
				if wide {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", when, dash(e.Who), dash(e.Via), dash(e.Role),
						dash(e.Remote), dash(e.Replica), dash(e.Method), dash(e.Path), dash(e.Machine), status, dash(e.Summary))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", when, dash(e.Who), dash(e.Remote), dash(e.Method), dash(e.Route),
					dash(e.Machine), status)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().StringVar(&machine, "machine", "", "only the entries naming this machine id")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many entries, newest first (1-10000)")
	_ = cmd.RegisterFlagCompletionFunc("machine", c.completeMachine)
	return cmd
}
