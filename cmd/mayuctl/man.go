package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// manCmd prints mayuctl(1), written from the command tree itself so the
// page never drifts from the commands (the Debian package ships it). It is
// hidden: operators read the page, not its source. cobra/doc would do the
// same through a Markdown converter; a page this plain needs none.
func (c *cli) manCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:     "man",
		Short:   "print the mayuctl(1) manual page (groff)",
		Example: "  mayuctl man | man -l -",
		Hidden:  true,
		Args:    noArgs,
		RunE: call(false, func(*cobra.Command, []string) error {
			writeMan(c.stdout, root)
			return nil
		}),
	}
}

func writeMan(w io.Writer, root *cobra.Command) {
	fmt.Fprintf(w, ".TH MAYUCTL 1 \"\" \"mayuctl %s\" \"mayu\"\n", roffEscape(version))
	fmt.Fprintf(w, ".SH NAME\nmayuctl \\- %s\n", roffEscape(strings.TrimPrefix(root.Short, "mayuctl ")))
	fmt.Fprintf(w, ".SH SYNOPSIS\n.B mayuctl\n[\\fIflags\\fR] \\fIcommand\\fR [\\fIargs\\fR]\n")
	fmt.Fprintf(w, ".SH DESCRIPTION\n%s\n", roffText(root.Long))
	fmt.Fprintf(w, ".SH OPTIONS\n")
	writeFlags(w, root.PersistentFlags())
	fmt.Fprintf(w, ".SH COMMANDS\n")
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			if !sub.IsAvailableCommand() || sub.Name() == "help" {
				continue
			}
			fmt.Fprintf(w, ".SS %s\n", roffEscape(sub.CommandPath()+strings.TrimPrefix(sub.Use, sub.Name())))
			text := sub.Long
			if text == "" {
				text = sub.Short
			}
			fmt.Fprintf(w, "%s\n", roffText(text))
			writeFlags(w, sub.LocalNonPersistentFlags())
			if sub.Example != "" {
				fmt.Fprintf(w, ".PP\nExamples:\n.PP\n.nf\n.RS\n%s\n.RE\n.fi\n", roffEscape(sub.Example))
			}
			walk(sub)
		}
	}
	walk(root)
	fmt.Fprintf(w, ".SH EXAMPLES\n.nf\n.RS\n%s\n.RE\n.fi\n", roffEscape(root.Example))
	fmt.Fprintf(w, ".SH SEE ALSO\n.BR mayu (8),\n.BR etcdctl (1)\n")
}

func writeFlags(w io.Writer, fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name := "\\-\\-" + roffEscape(f.Name)
		if f.Shorthand != "" {
			name = "\\-" + f.Shorthand + ", " + name
		}
		if t := f.Value.Type(); t != "bool" {
			name += " \\fI" + t + "\\fR"
		}
		usage := f.Usage
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && f.DefValue != "0" {
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s\n", name, roffEscape(usage))
	})
}

// roffText is help text as paragraphs: a blank line starts a new one and
// an indented line is kept as written.
func roffText(s string) string {
	var b strings.Builder
	for i, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		lines := strings.Split(para, "\n")
		indented := false
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, " ") {
				indented = true
			}
		}
		if indented {
			b.WriteString(".nf\n" + roffEscape(para) + "\n.fi\n")
			continue
		}
		b.WriteString(roffEscape(para) + "\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// roffEscape keeps groff from reading text as requests or escapes.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}
