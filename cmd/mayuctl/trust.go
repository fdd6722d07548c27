package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) addMACCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "add-mac ID MAC...",
		Short: "add MACs to a machine, also an installed one",
		Long: `Add MACs to a machine, in any state. A boot request adds the MACs a machine
sends only until it is installed; from then on only this command does, and
DHCP ignores the MACs it adds (the firmware boots the disk). A MAC of
another machine is refused. Exit status 3 when the machine is not
registered.`,
		Example: `  mayuctl add-mac 5cg1234xyz 52:54:00:12:34:58
  mayuctl add-mac 5cg1234xyz 52-54-00-12-34-58 52:54:00:12:34:59`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("give a machine id and at least one MAC")
			}
			return nil
		},
		ValidArgsFunction: c.completeMachine,
		RunE: call(true, func(cmd *cobra.Command, args []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			for _, mac := range args[1:] {
				m, err := client.AddMAC(cmd.Context(), args[0], mac)
				if err != nil {
					return err
				}
				if done, err := c.printData(m); done {
					if err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(c.stdout, "%s (%s) has MACs %s\n", dash(m.ID), dash(string(m.State)), dash(cleanJoin(m.MACs, ", ")))
			}
			return nil
		}),
	}
}

func (c *cli) rotateSecretCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-secret",
		Short: "replace the cluster secret node tokens are made with",
		Long: `Replace the cluster secret that every node token is made with by a new
random one, in etcd. Every replica follows it at once: all hand out tokens
of the new secret from now on. Tokens of the previous secret keep opening
what they opened for cluster.install.timeout, so installs in flight
complete; after that they open nothing, and a rotation drops the secret
before the previous one at once. Machines installed before the rotation
report boot-complete with the token of their disk: once the window is over
that is refused (their state and last boot stay as they are; they keep
booting from disk) until they are reinstalled. Rotate when the secret may
have leaked (an etcd backup, a snapshot).`,
		Example: `  mayuctl rotate-secret`,
		Args:    maxArgs(0, "rotate-secret takes no arguments"),
		RunE: call(false, func(cmd *cobra.Command, args []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			rot, err := client.RotateSecret(cmd.Context())
			if err != nil {
				return err
			}
			if done, err := c.printData(rot); done {
				return err
			}
			line := fmt.Sprintf("cluster secret rotated at %s by %s", rot.Rotated.Format(time.RFC3339), dash(rot.Replica))
			if !rot.PreviousValidUntil.IsZero() {
				line += fmt.Sprintf("; tokens of the previous secret open nothing after %s", rot.PreviousValidUntil.Format(time.RFC3339))
			}
			fmt.Fprintln(c.stdout, line)
			return nil
		}),
	}
}
