package main

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// The token `deputy dev token` prints is accepted by a dev-mode verifier
// that loads the same key file, as a server in another shell would.
func TestDevTokenAcceptedByDevServer(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "signing-key.json")
	cases := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, id *sidecar.Identity)
	}{
		{
			name: "staff token",
			args: []string{"--sub", "sam", "--name", "Sam Staff", "--roles", "support_agent,viewer", "--privileges", "view_customers",
				"--org", "acme", "--domain", "eu.shop", "--email", "sam@example.com", "--ttl", "10m", "--claim", "team=care"},
			check: func(t *testing.T, id *sidecar.Identity) {
				if id.Subject != "sam" || id.Name != "Sam Staff" || !slices.Equal(id.Roles, []string{"support_agent", "viewer"}) ||
					!slices.Equal(id.Privileges, []string{"view_customers"}) || id.Org != "acme" || id.Domain != "eu.shop" ||
					id.Email != "sam@example.com" || id.Claims["team"] != "care" {
					t.Fatalf("identity = %+v", *id)
				}
			},
		},
		{name: "subject required", args: []string{"--roles", "x"}, wantErr: `"sub"`},
		{name: "malformed claim", args: []string{"--sub", "a", "--claim", "novalue"}, wantErr: "name=value"},
		{name: "non-positive ttl", args: []string{"--sub", "a", "--ttl", "0s"}, wantErr: "ttl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newDevCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(append([]string{"token", "--key-file", keyFile}, tc.args...))
			err := cmd.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			server, err := identity.LoadDevIssuer(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			v, err := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true, KeyFile: keyFile}}, identity.WithDevIssuer(server))
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.VerifyToken(context.Background(), strings.TrimSpace(out.String()))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, id)
		})
	}
}
