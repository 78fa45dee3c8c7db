package main

import (
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// newBundleCmd builds, signs and verifies OPA bundles, the form in which
// policies ship to a bundle server and from there to every replica.
func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Build, sign and verify OPA policy bundles",
	}
	cmd.AddCommand(newBundleBuildCmd(), newBundleSignCmd(), newBundleVerifyCmd())
	return cmd
}

func newBundleBuildCmd() *cobra.Command {
	var (
		out, revision, query string
		roots, allow         []string
		includeTests         bool
		sign                 policy.SignOptions
	)
	cmd := &cobra.Command{
		Use:   "build [paths...]",
		Short: "Build an OPA bundle (.tar.gz) from policy directories",
		Long: `Build an OPA bundle from Rego and data files (default: policies). The
manifest carries the revision (default: the current git commit) and the
roots Deputy owns. Policies are compiled strictly first; a bundle that would
be refused at load is refused here. With --key the bundle is signed too.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("revision") {
				revision = gitRevision()
			}
			if err := policy.CheckAllowedBuiltins("allow-builtins", allow); err != nil {
				return err
			}
			b, err := policy.BuildBundle(defaultPaths(args), policy.BuildOptions{Revision: revision, Roots: roots, IncludeTests: includeTests, AllowBuiltins: allow})
			if err != nil {
				return err
			}
			if err := servable(cmd.Context(), query, allow, policy.SetFromBundle(b, out)); err != nil {
				return err
			}
			if sign.Key != "" {
				if err := policy.SignBundle(b, sign); err != nil {
					return err
				}
			}
			if err := policy.WriteBundleFile(out, b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: revision %q, roots %v, %d modules, signed %v\n",
				out, revision, *b.Manifest.Roots, len(b.Modules), sign.Key != "")
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "bundles/deputy.tar.gz", "bundle file to write")
	cmd.Flags().StringVar(&revision, "revision", "", "manifest revision (default: git rev-parse HEAD)")
	cmd.Flags().StringSliceVar(&roots, "root", policy.DefaultRoots, "manifest roots")
	cmd.Flags().BoolVar(&includeTests, "include-tests", false, "keep *_test.rego files in the bundle")
	decisionQueryFlag(cmd, &query)
	allowBuiltinsFlag(cmd, &allow)
	signFlags(cmd, &sign)
	return cmd
}

func newBundleSignCmd() *cobra.Command {
	var (
		out  string
		sign policy.SignOptions
	)
	cmd := &cobra.Command{
		Use:   "sign BUNDLE",
		Short: "Sign a bundle: write .signatures.json into it (OPA bundle signing)",
		Long: `Sign a bundle: hash every file into a JWT in .signatures.json (OPA's
format). The JWT carries the signing time (iat): a serving Deputy with a
public key refuses a bundle signed before the one it serves.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sign.Key == "" {
				return fmt.Errorf("--key is required")
			}
			b, err := policy.ReadBundleFile(args[0], policy.ReadOptions{})
			if err != nil {
				return err
			}
			if err := policy.SignBundle(b, sign); err != nil {
				return err
			}
			if out == "" {
				out = args[0]
			}
			if err := policy.WriteBundleFile(out, b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s (revision %q) with %s\n", out, b.Manifest.Revision, algOrDefault(sign.Algorithm))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the signed bundle here (default: in place)")
	signFlags(cmd, &sign)
	return cmd
}

func signFlags(cmd *cobra.Command, sign *policy.SignOptions) {
	cmd.Flags().StringVar(&sign.Key, "key", "", "private key (PEM file) to sign with")
	cmd.Flags().StringVar(&sign.Algorithm, "alg", policy.AlgES256, "signing algorithm: ES256, RS256, or another of ES, PS, RS 256/384/512")
	cmd.Flags().StringVar(&sign.KeyID, "key-id", "", "kid of the signing key, when verifiers hold several")
	cmd.Flags().StringVar(&sign.Scope, "scope", "", "scope claim verifiers may require")
}

func newBundleVerifyCmd() *cobra.Command {
	var (
		opts  policy.ReadOptions
		query string
		allow []string
	)
	cmd := &cobra.Command{
		Use:   "verify BUNDLE",
		Short: "Verify a bundle's signature, files and roots as a serving Deputy would",
		Long: `Verify a bundle's signature, files and roots, then compile it and run
every check a serving Deputy runs before a set serves (rule data, mask
rules, rules for the decision query): a bundle that verifies here is one
serve activates.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := policy.VerifyBundleFile(args[0], opts)
			if err != nil {
				return err
			}
			if err := policy.CheckAllowedBuiltins("allow-builtins", allow); err != nil {
				return err
			}
			if err := servable(cmd.Context(), query, allow, policy.SetFromBundle(b, args[0])); err != nil {
				return err
			}
			at, err := policy.SignedAt(b)
			if err != nil {
				return err
			}
			// A serving Deputy orders bundles by this time.
			signed := "no signing time (iat)"
			if !at.IsZero() {
				signed = "signed at " + at.Format(time.RFC3339)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: signature valid, %s, revision %q, roots %v, %d modules\n",
				args[0], signed, b.Manifest.Revision, *b.Manifest.Roots, len(b.Modules))
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.PublicKey, "public-key", "", "public key (PEM file) the bundle must be signed with")
	cmd.Flags().StringVar(&opts.Algorithm, "alg", policy.AlgES256, "algorithm of the public key: ES256, RS256, or another of ES, PS, RS 256/384/512")
	cmd.Flags().StringVar(&opts.Scope, "scope", "", "required scope claim")
	cmd.Flags().StringSliceVar(&opts.Roots, "root", policy.DefaultRoots, "roots the manifest may claim")
	decisionQueryFlag(cmd, &query)
	allowBuiltinsFlag(cmd, &allow)
	return cmd
}

// gitRevision is the commit the bundle is built from, or empty outside a
// git checkout.
func gitRevision() string {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func algOrDefault(a string) string {
	if a == "" {
		return policy.AlgES256
	}
	return a
}
