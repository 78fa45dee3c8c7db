package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// A record whose input the decision log's mask removed where the policy
// reads it, decided again otherwise, is not reproducible: eval says so,
// naming the masked input, and exits 3, rather than report that the
// policy now decides otherwise. Masked input the policy does not read, or
// that a flag gives anew, leaves the record replayable, differences
// reported as ever.
func TestEvalReplayOfMaskedRecords(t *testing.T) {
	// record is a record of the testdata policy's allow of staff-1 acting
	// as a customer, holding identity (or not) and listing erased.
	record := func(result, reason, identity, erased string) string {
		return `{"decision_id": "5f0c1d9e2a7b4c3d8e6f1a2b3c4d5e6f", "time": "2026-11-29T03:48:53Z", "result": "` + result + `", "reason": "` + reason + `",
			"input": {"attributes": {"request": {"http": {"method": "GET", "path": "/customer/account"}}}, ` + identity + `
			"delegation": {"mode": "impersonation"}, "parsed_path": ["customer", "account"]}, "erased": [` + erased + `]}`
	}
	const staff = `"identity": {"sub": "staff-1"},`
	cases := []struct {
		name     string
		record   string
		args     []string
		want     string
		notRepro bool
	}{
		{name: "body erased, which the policy does not read", record: record("allow", "delegated", staff, `"/input/parsed_body"`),
			want: "same as recorded"},
		{name: "body erased, which the policy does not read, and a decision that changed", record: record("deny", "closed", staff, `"/input/parsed_body"`),
			want: "recorded deny (closed) with revision : DIFFERS from the record"},
		{name: "identity erased, which the policy reads", record: record("allow", "delegated", "", `"/input/identity"`),
			want: "not reproducible: the decision log's mask removed or replaced input the policy reads, at /input/identity", notRepro: true},
		{name: "identity erased, and a decision the rest of the input decides alike", record: record("deny", "no_identity", "", `"/input/identity"`),
			want: "same as recorded"},
		{name: "identity erased and given anew", record: record("allow", "delegated", "", `"/input/identity"`),
			args: []string{"--identity", `{"sub": "staff-1"}`}, want: "same as recorded"},
		{name: "input erased whole, its mask failing", record: `{"decision_id": "5f0c1d9e2a7b4c3d8e6f1a2b3c4d5e6f", "result": "allow", "reason": "delegated",
			"erased": ["/input"], "mask_error": "eval_conflict_error"}`,
			want: "not reproducible: its input was erased whole, as masking it failed (eval_conflict_error)", notRepro: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runEvalStdin(t, tc.record, append([]string{"--input", "-"}, tc.args...)...)
			var es *exitStatus
			if got := errors.As(err, &es) && es.code == exitNotReproducible; got != tc.notRepro {
				t.Fatalf("not reproducible = %v (err %v), want %v\n%s", got, err, tc.notRepro, out)
			}
			if tc.notRepro {
				if strings.Contains(out, "DIFFERS") || strings.Contains(out, "decision:") {
					t.Fatalf("a record that is not reproducible is reported decided:\n%s", out)
				}
				out = err.Error()
			} else if err != nil {
				t.Fatalf("eval: %v\n%s", err, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

// serve logs an allowed impersonated GraphQL mutation; its record, under
// the default mask, lacks input.parsed_body, which the GraphQL rules read.
// Its replay says it is not reproducible, naming that input; the record
// of a request without a body, in the same session, replays as decided.
func TestEvalReplayOfServedGraphQLRecord(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	cfg := serveLoggingInput(t, dir, rs.Addr)
	token := devToken(t, &cfg)
	base := "http://" + cfg.HTTP.Addr
	apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9", token(identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}}), `{"name": "Zoe"}`, 200)
	apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9/consent", token(identity.DevClaims{Subject: "cust-9"}), `{"allowed": true}`, 200)
	started := apiCall(t, base, "POST", "/deputy/v1/impersonation/sessions", token(identity.DevClaims{Subject: "sam", Roles: []string{"support_agent"}}), `{"customer_id": "cust-9"}`, 201)
	cookie := redeemCookie(t, base, started["redeem_url"].(string))

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc := goredis.NewClient(&goredis.Options{Addr: rs.Addr})
	defer rc.Close()
	// replay checks method path body as serve, and replays serve's record.
	replay := func(method, path, body string) (string, error) {
		t.Helper()
		headers := map[string]string{"cookie": cookie}
		if body != "" {
			headers["content-type"], headers["content-length"] = "application/json", strconv.Itoa(len(body))
		}
		check := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: "shop.example", Body: body, Headers: headers}}}}
		served, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), check)
		if err != nil {
			t.Fatal(err)
		}
		if served.GetOkResponse() == nil {
			t.Fatalf("serve denied %s %s: %v", method, path, served)
		}
		rec := loggedDecision(t, rc, cfg.DecisionLog.Stream, served.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue())
		raw, _ := json.Marshal(rec)
		file := filepath.Join(t.TempDir(), "record.json")
		writeFile(t, file, raw)
		var out bytes.Buffer
		err = runEval(context.Background(), evalFlags{policies: []string{dir}, input: file}, &out)
		return out.String(), err
	}

	out, err := replay("POST", "/graphql", `{"query": "mutation { addProductsToCart(cartId: \"c1\", cartItems: [{sku: \"S1\", quantity: 1}]) { cart { id } } }"}`)
	var es *exitStatus
	if !errors.As(err, &es) || es.code != exitNotReproducible || !strings.Contains(err.Error(), "at /input/parsed_body") || strings.Contains(out, "DIFFERS") {
		t.Fatalf("replay of the masked GraphQL record: err %v, output:\n%s\nwant it not reproducible, naming /input/parsed_body", err, out)
	}
	out, err = replay("GET", "/customer/account", "")
	if err != nil || !strings.Contains(out, "same as recorded") || !strings.Contains(out, "decision: allow") {
		t.Fatalf("replay of the record without a body: %v\n%s", err, out)
	}
}
