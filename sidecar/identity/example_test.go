package identity_test

import (
	"context"
	"fmt"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// Dev mode: the server trusts the dev issuer, and tokens minted with the
// same key (what `deputy dev token` does) verify.
func ExampleDevIssuer() {
	dev, _ := identity.GenerateDevIssuer()
	v, _ := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true}}, identity.WithDevIssuer(dev))

	tok, _ := dev.Mint(identity.DevClaims{Subject: "alice", Roles: []string{"support_agent"}, TTL: time.Hour})
	id, err := v.Verify(context.Background(), &sidecar.Request{Headers: map[string]string{"authorization": "Bearer " + tok}})
	fmt.Println(id.Subject, id.Roles, id.Issuer, err)

	_, err = v.Verify(context.Background(), &sidecar.Request{Headers: map[string]string{"authorization": "Bearer garbage"}})
	fmt.Println(sidecar.ErrorCode(err), sidecar.ErrorMessage(err))
	// Output:
	// alice [support_agent] deputy-dev <nil>
	// unauthorized malformed_token
}
