package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayu-boot/mayu/pkg/api"
)

func (c *cli) artifactCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifact",
		Short: "add, list and remove the artifacts mayu installs (kernels, initrds, OS images)",
		Long: `Artifacts are the files mayu hands machines, identified by their SHA-256:
the catalogue in etcd names them, every replica keeps verified bytes in its
cache. The configuration names one as "artifact:NAME" (cluster.install,
a profile's install). Names are immutable: a new version is a new name.`,
		Example: `  mayuctl artifact add os-2026-11 --file ./os.img
  mayuctl artifact list
  mayuctl artifact rm os-2026-10`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return usagef("artifact needs a command: add, list, show or rm") },
	}
	cmd.AddCommand(c.artifactAddCmd(), c.artifactListCmd(), c.artifactShowCmd(), c.artifactRmCmd())
	return cmd
}

func (c *cli) artifactAddCmd() *cobra.Command {
	var req api.AddArtifactRequest
	var file, keyring string
	cmd := &cobra.Command{
		Use:   "add NAME (--url URL (--sha256 HEX | --digests URL --keyring FILE | --sig URL --keyring FILE) | --file PATH [--sha256 HEX])",
		Short: "add an artifact, downloaded once from upstream or uploaded from a file",
		Long: `Add an artifact to the catalogue.

With --url, one replica (the one that takes the claim in etcd) downloads
it, resuming after a broken connection, and verifies it: against --sha256,
or against the SHA-512 in the clearsigned digests file --digests (Flatcar's
<file>.DIGESTS.asc), or against the detached signature --sig (<file>.sig);
the signatures must come from a key in --keyring (armored public keys,
as "gpg --export --armor" writes them). Then every other replica copies it from a replica that holds it;
upstream is asked again only if the downloader dies. The command returns
once the artifact is in the catalogue: follow it with "mayuctl artifact
list".

With --file, the file is streamed through the admin API to the replica
answering (never held in memory), verified against --sha256 if given, and
copied from there to the others.

A wrong digest or a bad signature is refused and nothing is stored.`,
		Example: `  mayuctl artifact add flatcar-4230.2.3-image \
    --url https://stable.release.flatcar-linux.net/amd64-usr/4230.2.3/flatcar_production_image.bin.bz2 \
    --digests https://stable.release.flatcar-linux.net/amd64-usr/4230.2.3/flatcar_production_image.bin.bz2.DIGESTS.asc \
    --keyring /etc/mayu/flatcar-image-signing-key.asc
  mayuctl artifact add installer-kernel-6.1 --url http://mirror/vmlinuz --sha256 9f86d0...
  mayuctl artifact add os-2026-11 --file ./os.img`,
		Args: oneArg("artifact name"),
		RunE: call(false, func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if (req.URL == "") == (file == "") {
				return usagef("give --url (download) or --file (upload), one of them")
			}
			if file != "" {
				if req.DigestsURL != "" || req.SigURL != "" || keyring != "" {
					return usagef("--digests, --sig and --keyring go with --url")
				}
				return c.upload(cmd, req.Name, file, req.SHA256)
			}
			if req.SHA256 == "" && req.DigestsURL == "" && req.SigURL == "" {
				return usagef("say how to verify the download: --sha256 HEX, --digests URL or --sig URL")
			}
			if (req.DigestsURL != "" || req.SigURL != "") != (keyring != "") {
				return usagef("--digests and --sig need --keyring FILE (the public keys the signature must come from), and --keyring needs one of them")
			}
			if keyring != "" {
				data, err := readSmall(keyring, 1<<20)
				if err != nil {
					return usagef("--keyring: %v", err)
				}
				// Armored only: it travels in JSON and is stored in etcd as
				// text, where binary keys would not survive.
				if !strings.Contains(string(data), "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
					return usagef("--keyring: %s holds no armored public key (-----BEGIN PGP PUBLIC KEY BLOCK-----); export it with `gpg --export --armor KEYID`", keyring)
				}
				req.Keyring = string(data)
			}
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			a, err := client.AddArtifact(cmd.Context(), req)
			if err != nil {
				return err
			}
			if done, err := c.printData(a); done {
				return err
			}
			fmt.Fprintf(c.stdout, "artifact %s added (%s): one replica downloads it now; follow it with `mayuctl artifact list`\n", clean(a.Name), clean(a.Status))
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.URL, "url", "", "download from this http(s) URL")
	f.StringVar(&req.SHA256, "sha256", "", "the SHA-256 (hex) the bytes must have")
	f.StringVar(&req.DigestsURL, "digests", "", "clearsigned digests file (Flatcar's <file>.DIGESTS.asc) listing the file's SHA-512")
	f.StringVar(&req.SigURL, "sig", "", "detached OpenPGP signature of the file (<file>.sig)")
	f.StringVar(&keyring, "keyring", "", "file of the armored OpenPGP public keys signatures must come from")
	f.StringVar(&file, "file", "", "upload this local file")
	return cmd
}

// upload streams a file to the admin API.
func (c *cli) upload(cmd *cobra.Command, name, path, sum string) error {
	fh, err := os.Open(path)
	if err != nil {
		return usagef("--file: %v", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return usagef("--file: %s is not a regular file", path)
	}
	client, err := c.client(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if cmd.Flags().Changed("timeout") && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	a, err := client.UploadArtifact(ctx, name, fh, st.Size(), strings.ToLower(sum))
	if err != nil {
		return err
	}
	if done, err := c.printData(a); done {
		return err
	}
	fmt.Fprintf(c.stdout, "artifact %s uploaded: %d bytes, sha256 %s; the other replicas copy it now\n", clean(a.Name), a.Size, clean(a.SHA256))
	return nil
}

func (c *cli) artifactListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "list the artifacts, where their bytes are, and the transfers under way",
		Long: `List the catalogue: each artifact's status (pending: not downloaded yet;
ready; failed, with why), size, digest, the replicas that hold it (of the
replicas announced now) and the transfers under way with their progress.
-o wide adds the source, how it was verified and what uses it.`,
		Example: `  mayuctl artifact list
  mayuctl artifact list -o json`,
		Args: noArgs,
		RunE: call(false, func(cmd *cobra.Command, _ []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			l, err := client.Artifacts(cmd.Context())
			if err != nil {
				return err
			}
			if done, err := c.printData(l); done {
				return err
			}
			wide := c.format() == "wide"
			tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
			if wide {
				fmt.Fprintln(tw, "NAME\tSTATUS\tSIZE\tSHA256\tHELD BY\tTRANSFERS\tSOURCE\tVERIFIED\tUSED BY")
			} else {
				fmt.Fprintln(tw, "NAME\tSTATUS\tSIZE\tSHA256\tHELD BY\tTRANSFERS")
			}
			for _, a := range l.Artifacts {
				status := a.Status
				if a.Error != "" {
					status += ": " + a.Error
				}
				sum := short(a.SHA256)
				if wide {
					sum = a.SHA256
				}
				if wide {
					src := a.URL
					if a.Uploaded {
						src = "upload"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(a.Name), clean(status), size(a.Size), dash(sum),
						heldBy(a, l.Replicas), transfers(a), dash(src), dash(a.Verified), dash(cleanJoin(a.UsedBy, ",")))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", clean(a.Name), clean(status), size(a.Size), dash(sum), heldBy(a, l.Replicas), transfers(a))
			}
			return tw.Flush()
		}),
	}
}

func (c *cli) artifactShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "show one artifact",
		Example: `  mayuctl artifact show flatcar-4230.2.3-image`,
		Args:    oneArg("artifact name"),
		RunE: call(false, func(cmd *cobra.Command, args []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			a, err := client.Artifact(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if done, err := c.printData(a); done {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
			row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, dash(v)) }
			row("Name", clean(a.Name))
			row("Status", clean(a.Status))
			if a.Error != "" {
				row("Error", clean(a.Error))
			}
			row("Size", size(a.Size))
			row("SHA-256", clean(a.SHA256))
			if a.SHA512 != "" {
				row("SHA-512", clean(a.SHA512))
			}
			src := a.URL
			if a.Uploaded {
				src = "uploaded"
			}
			row("Source", clean(src))
			if a.DigestsURL != "" {
				row("Digests", clean(a.DigestsURL))
			}
			if a.SigURL != "" {
				row("Signature", clean(a.SigURL))
			}
			row("Verified", clean(a.Verified))
			row("Added", fmt.Sprintf("%s by %s", a.AddedAt.Local().Format(time.RFC3339), clean(a.AddedBy)))
			for _, h := range a.Holders {
				row("Held by", fmt.Sprintf("%s (%s) since %s", clean(h.Replica), clean(h.PeerURL), h.Since.Local().Format(time.RFC3339)))
			}
			for _, p := range a.Progress {
				row("Transfer", fmt.Sprintf("%s from %s: %s", clean(p.Replica), clean(p.From), progress(p)))
			}
			row("Used by", cleanJoin(a.UsedBy, ", "))
			return tw.Flush()
		}),
	}
}

func (c *cli) artifactRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "remove an artifact the configuration no longer names",
		Long: `Remove an artifact from the catalogue; every replica then deletes its bytes
(unless another name has the same digest). Refused while the configuration
(cluster.install or a profile) names it.`,
		Example: `  mayuctl artifact rm os-2026-10`,
		Args:    oneArg("artifact name"),
		RunE: call(false, func(cmd *cobra.Command, args []string) error {
			client, err := c.client(cmd)
			if err != nil {
				return err
			}
			if err := client.RemoveArtifact(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "artifact %s removed\n", clean(args[0]))
			return nil
		}),
	}
}

// heldBy is "r1,r2 (2/3)": who holds the bytes, of the replicas up.
func heldBy(a api.Artifact, replicas []string) string {
	var names []string
	for _, h := range a.Holders {
		names = append(names, h.Replica)
	}
	if len(names) == 0 {
		return fmt.Sprintf("- (0/%d)", len(replicas))
	}
	return fmt.Sprintf("%s (%d/%d)", cleanJoin(names, ","), len(names), len(replicas))
}

func transfers(a api.Artifact) string {
	var out []string
	for _, p := range a.Progress {
		out = append(out, fmt.Sprintf("%s<-%s %s", p.Replica, p.From, progress(p)))
	}
	return dash(clean(strings.Join(out, ", ")))
}

func progress(p api.ArtifactProgress) string {
	if p.Total > 0 {
		return fmt.Sprintf("%d%% of %s", p.Bytes*100/p.Total, size(p.Total))
	}
	return size(p.Bytes)
}

// size is a byte count people read.
func size(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

// readSmall reads a file of at most limit bytes.
func readSmall(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// oneArg wants exactly one argument, what.
func oneArg(what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 || args[0] == "" {
			return usagef("give exactly one %s", what)
		}
		return nil
	}
}
