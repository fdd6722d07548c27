package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

func (c *cli) leasesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "leases",
		Short: "list the DHCP leases",
		Long: `List the DHCP leases in etcd, by address, with the machine each MAC
belongs to. -o wide adds the expiry time and whether the lease expired.`,
		Example: `  mayuctl leases
  mayuctl leases -o wide`,
		Args: noArgs,
		RunE: call(false, func(cmd *cobra.Command, _ []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			ls, err := client.Leases(cmd.Context())
			if err != nil {
				return err
			}
			if done, err := c.printData(ls); done {
				return err
			}
			wide := c.format() == "wide"
			now := time.Now()
			tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
			if wide {
				fmt.Fprintln(tw, "ADDRESS\tMAC\tMACHINE\tHOSTNAME\tEXPIRES\tEXPIRY\tEXPIRED\tGRANTED BY")
			} else {
				fmt.Fprintln(tw, "ADDRESS\tMAC\tMACHINE\tHOSTNAME\tEXPIRES\tGRANTED BY")
			}
			for _, l := range ls {
				expires := "in " + age(l.Expiry.Sub(now))
				if l.Expired {
					expires = "expired " + age(now.Sub(l.Expiry)) + " ago"
				}
				if wide {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%t\t%s\n", l.IP, dash(l.MAC), dash(l.Machine), dash(l.Hostname),
						expires, l.Expiry.Local().Format(time.RFC3339), l.Expired, dash(l.Leader))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.IP, dash(l.MAC), dash(l.Machine), dash(l.Hostname), expires, dash(l.Leader))
			}
			return tw.Flush()
		}),
	}
}

func (c *cli) replicasCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "replicas",
		Short: "list the replicas and show which one leads DHCP",
		Long: `List the replicas that announce themselves in etcd, which one leads DHCP,
and whether each runs the cluster configuration the leader publishes.
Warnings (no leader, a configuration mismatch, artifacts a replica lacks
that another holds) go to stderr. -o wide adds
the HTTP and metrics listeners, the full configuration hash and the start
time.`,
		Example: `  mayuctl replicas
  mayuctl replicas -o wide`,
		Args: noArgs,
		RunE: call(false, func(cmd *cobra.Command, _ []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			v, err := client.Replicas(cmd.Context())
			if err != nil {
				return err
			}
			if done, err := c.printData(v); done {
				return err
			}
			wide := c.format() == "wide"
			now := time.Now()
			tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
			if wide {
				fmt.Fprintln(tw, "NAME\tROLE\tCONFIG\tVERSION\tADVERTISE\tADMIN\tHTTP\tMETRICS\tSTARTED\tUP")
			} else {
				fmt.Fprintln(tw, "NAME\tROLE\tCONFIG\tVERSION\tADVERTISE\tADMIN\tUP")
			}
			for _, r := range v.Replicas {
				role := "follower"
				switch {
				case r.Leader:
					role = "leader"
				case !r.DHCP:
					role = "no-dhcp"
				}
				cfg := short(r.ConfigHash)
				if wide {
					cfg = r.ConfigHash
				}
				cfg = dash(cfg)
				if !r.ConfigMatches {
					cfg += " MISMATCH"
				}
				if len(r.FilesDiffer) > 0 {
					cfg += " FILES-DIFFER"
				}
				if len(r.MissingArtifacts) > 0 {
					cfg += fmt.Sprintf(" MISSING-%d-ARTIFACTS", len(r.MissingArtifacts))
				}
				if wide {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.Name), role, cfg, dash(r.Version), dash(r.Advertise),
						dash(r.Admin), dash(r.HTTP), dash(r.Metrics), r.Started.Local().Format(time.RFC3339), age(now.Sub(r.Started)))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.Name), role, cfg, dash(r.Version), dash(r.Advertise), dash(r.Admin), age(now.Sub(r.Started)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if v.Leader == "" {
				fmt.Fprintln(c.stderr, "warning: no replica leads DHCP now: no machine can network-boot (is etcd healthy? do the replicas' configurations agree?)")
			}
			for _, r := range v.Replicas {
				if len(r.MissingArtifacts) > 0 {
					fmt.Fprintf(c.stderr, "warning: %s lacks artifacts another replica holds: %s (it sends machines to a peer for them until it has copied them; `mayuctl artifact list` shows the transfers)\n",
						dash(r.Name), cleanJoin(r.MissingArtifacts, ", "))
				}
				switch {
				case len(r.FilesDiffer) > 0:
					for _, k := range r.FilesDiffer {
						fmt.Fprintf(c.stderr, "warning: %s serves another %s than the leader (sha256 %s, the leader's %s): it will not take over DHCP; copy the leader's file to it and restart it\n",
							dash(r.Name), clean(k), digestOrAbsent(r.Files[k]), digestOrAbsent(v.PublishedFiles[k]))
					}
				case !r.ConfigMatches:
					fmt.Fprintf(c.stderr, "warning: %s's cluster configuration differs from the leader's (%s): it will not take over DHCP; deploy the same cluster: section to it\n", dash(r.Name), dash(short(v.PublishedHash)))
				}
			}
			return nil
		}),
	}
}

func (c *cli) configCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "show the cluster configuration the DHCP leader publishes (secrets hidden)",
		Long: `Show the cluster configuration the DHCP leader publishes, its hash, and
whether the answering replica runs the same. Secrets are hidden. The table
and wide views are YAML with the configuration file's own key names, so that
it can be compared with the file on a replica; -o yaml is the same.
-o json prints the admin API's answer.`,
		Example: `  mayuctl config
  mayuctl config -o json`,
		Args: noArgs,
		RunE: call(false, func(cmd *cobra.Command, _ []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			v, err := client.Config(cmd.Context())
			if err != nil {
				return err
			}
			if c.format() == "json" {
				return c.printJSON(v)
			}
			enc := yaml.NewEncoder(c.stdout)
			enc.SetIndent(2)
			if err := enc.Encode(v); err != nil {
				return err
			}
			return enc.Close()
		}),
	}
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "print mayuctl's version",
		Long:    "Print mayuctl's version; mayuctl --version prints the same.",
		Example: "  mayuctl version\n  mayuctl version -o json",
		Args:    noArgs,
		RunE: call(false, func(*cobra.Command, []string) error {
			if done, err := c.printData(map[string]string{"version": version}); done {
				return err
			}
			fmt.Fprintf(c.stdout, "mayuctl %s\n", version)
			return nil
		}),
	}
}

// digestOrAbsent is the first 12 hex digits of a file digest, "absent"
// when the replica serves no such file.
func digestOrAbsent(d string) string {
	if d == "" {
		return "absent"
	}
	return clean(short(d))
}
