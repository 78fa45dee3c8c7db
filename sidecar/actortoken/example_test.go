package actortoken_test

import (
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
)

// What an upstream reads from x-deputy-token after verifying it with a key
// from /.well-known/jwks.json.
func ExampleSigner_Sign() {
	key, _ := actortoken.GenerateKey()
	s, _ := actortoken.New(actortoken.Config{Audience: "storefront"}, actortoken.WithKeys(key))
	tok, _ := s.Sign(&sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "sess-1", Actor: "staff-7", Subject: "customer-1"})

	parsed, _ := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	pub := key.Public()
	var std jwt.Claims
	var c actortoken.Claims
	err := parsed.Claims(&pub, &std, &c)
	fmt.Println(err, std.Subject, c.Actor.Subject, std.Audience, c.Deputy.Mode, c.Deputy.SessionID)
	// Output: <nil> customer-1 staff-7 [storefront] impersonation sess-1
}
