// Command deputy is the authorization sidecar: `deputy serve` answers
// Envoy's ext_authz checks; the other subcommands are the tools around it.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/buildinfo"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "deputy:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "deputy",
		Short:         "Authorization sidecar for Envoy with delegated identity",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
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
