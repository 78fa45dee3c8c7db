package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// newPolicyCmd groups the tools security teams run on policies before they
// ship: the Rego test suite and the strict check CI gates on.
func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Test and check Rego policies",
	}
	cmd.AddCommand(newPolicyTestCmd(), newPolicyCheckCmd())
	return cmd
}

func newPolicyTestCmd() *cobra.Command {
	var opts policy.TestOptions
	cmd := &cobra.Command{
		Use:   "test [paths...]",
		Short: "Run the Rego tests (rules named test_*) under paths, as opa test does",
		Long: `Run the Rego tests under paths (default: policies). Tests live in
<pkg>_test packages beside the rules. The exit code is non-zero when a test
fails, so CI can gate on it. --coverage prints OPA's JSON coverage report.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			paths := defaultPaths(args)
			opts.Output = cmd.OutOrStdout()
			if err := policy.CheckAllowedBuiltins("allow-builtins", opts.AllowBuiltins); err != nil {
				return err
			}
			rep, err := policy.RunTests(cmd.Context(), paths, opts)
			if err != nil {
				return err
			}
			if rep.Failed > 0 {
				return fmt.Errorf("%d of %d tests failed: %s", rep.Failed, rep.Failed+rep.Passed, strings.Join(rep.Failures, ", "))
			}
			if rep.Passed == 0 {
				return errors.New("no tests found under " + strings.Join(paths, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&opts.Verbose, "verbose", "v", false, "list every test and trace failures")
	cmd.Flags().BoolVar(&opts.Coverage, "coverage", false, "print a JSON coverage report")
	cmd.Flags().StringVarP(&opts.Run, "run", "r", "", "run only tests matching this regular expression")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 0, "timeout per test (default 5s)")
	allowBuiltinsFlag(cmd, &opts.AllowBuiltins)
	return cmd
}

func newPolicyCheckCmd() *cobra.Command {
	var (
		query string
		allow []string
	)
	cmd := &cobra.Command{
		Use:   "check [paths...]",
		Short: "Compile policies strictly, fail on opa fmt differences, and run serve's activation checks",
		RunE: func(cmd *cobra.Command, args []string) error {
			paths := defaultPaths(args)
			if err := policy.CheckAllowedBuiltins("allow-builtins", allow); err != nil {
				return err
			}
			rep, err := policy.Check(paths, policy.CheckOptions{AllowBuiltins: allow})
			for _, f := range rep.Unformatted {
				fmt.Fprintln(cmd.ErrOrStderr(), "not formatted:", f)
			}
			if err != nil {
				return err
			}
			// The set serve would load from these paths (tests left out)
			// passes every check a serving Deputy runs before it serves.
			set, err := policy.LoadPaths(paths)
			if err != nil {
				return err
			}
			if err := servable(cmd.Context(), query, allow, set); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d modules compile strictly and are formatted\n", rep.Modules)
			return nil
		},
	}
	decisionQueryFlag(cmd, &query)
	allowBuiltinsFlag(cmd, &allow)
	return cmd
}

func defaultPaths(args []string) []string {
	if len(args) == 0 {
		return []string{policy.DefaultPolicyPath}
	}
	return args
}
