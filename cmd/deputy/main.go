// Command deputy is the authorization sidecar: `deputy serve` answers
// Envoy's ext_authz checks; the other subcommands are the tools around it.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/buildinfo"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "deputy:", err)
		code := 1
		var es *exitStatus
		if errors.As(err, &es) {
			code = es.code
		}
		os.Exit(code)
	}
}

func newRootCmd() *cobra.Command {
	// `--version` is answered here rather than through cobra's Version and
	// a version template: a text/template the binary can execute makes the
	// linker keep every exported method of every reachable type (megabytes
	// of go-redis alone), mapped into every sidecar.
	var version bool
	root := &cobra.Command{
		Use:           "deputy",
		Short:         "Authorization sidecar for Envoy with delegated identity",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !version {
				return cmd.Help()
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Get())
			return err
		},
	}
	root.Flags().BoolVarP(&version, "version", "v", false, "print the version and exit (the same line as the version command)")
	root.AddCommand(newServeCmd())
	root.AddCommand(newPolicyCmd())
	root.AddCommand(newBundleCmd())
	root.AddCommand(newEvalCmd())
	root.AddCommand(newDevCmd())
	root.AddCommand(newDecisionsCmd())
	root.AddCommand(newVersionCmd())
	root.AddCommand(newKeysCmd())
	root.AddCommand(newConfigCmd())
	return root
}
