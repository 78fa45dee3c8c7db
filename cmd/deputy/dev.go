package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deputyhq/deputy/sidecar/identity"
)

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Tools for trying Deputy locally",
	}
	cmd.AddCommand(newDevTokenCmd())
	return cmd
}

type devTokenFlags struct {
	sub, name, email, org, domain string
	roles, privileges, claims     []string
	ttl                           time.Duration
	keyFile                       string
}

func newDevTokenCmd() *cobra.Command {
	var f devTokenFlags
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a bearer token that a Deputy in dev mode accepts",
		Long: `Mint a bearer token signed with the dev key. A Deputy started with
--dev in the same directory reads the same key file and accepts the token
(issuer "` + identity.DevIssuerName + `", audience "` + identity.DevAudience + `"). The key file is
created when missing. Never use dev tokens outside development.`,
		Example: `  deputy dev token --sub alice --roles customer
  deputy dev token --sub sam --name "Sam Staff" --roles support_agent --ttl 8h
  curl -H "authorization: Bearer $(deputy dev token --sub alice)" localhost:8181/customer/account`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			extra := map[string]any{}
			for _, kv := range f.claims {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--claim %q: want name=value", kv)
				}
				extra[k] = v
			}
			dev, err := identity.LoadDevIssuer(f.keyFile)
			if err != nil {
				return err
			}
			tok, err := dev.Mint(identity.DevClaims{
				Subject: f.sub, Name: f.name, Email: f.email, Org: f.org, Domain: f.domain,
				Roles: f.roles, Privileges: f.privileges, TTL: f.ttl, Extra: extra,
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.sub, "sub", "", "subject (user id) of the token")
	fl.StringVar(&f.name, "name", "", "display name")
	fl.StringVar(&f.email, "email", "", "email address")
	fl.StringSliceVar(&f.roles, "roles", nil, "roles, comma-separated")
	fl.StringSliceVar(&f.privileges, "privileges", nil, "privileges, comma-separated")
	fl.StringVar(&f.org, "org", "", "organisation")
	fl.StringVar(&f.domain, "domain", "", "reseller domain the user signed in through")
	fl.StringArrayVar(&f.claims, "claim", nil, "extra claim name=value (repeatable)")
	fl.DurationVar(&f.ttl, "ttl", time.Hour, "token lifetime")
	fl.StringVar(&f.keyFile, "key-file", devKeyFileDefault(), "dev signing key (created when missing); env DEPUTY_IDENTITY_DEV_KEY_FILE")
	_ = cmd.MarkFlagRequired("sub")
	return cmd
}

// devKeyFileDefault follows the server's setting so both sides agree on the
// key when it was moved with the environment.
func devKeyFileDefault() string {
	if p := os.Getenv("DEPUTY_IDENTITY_DEV_KEY_FILE"); p != "" {
		return p
	}
	return identity.DefaultDevKeyFile
}
