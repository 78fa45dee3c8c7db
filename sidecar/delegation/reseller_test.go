package delegation_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

func TestParseAssignments(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		data    string
		format  string
		maxRows int
		want    int
		code    string
		errHas  []string
	}{
		{name: "csv with header", file: "assignments.csv", format: "csv", want: 3},
		{name: "json lines", file: "assignments.jsonl", format: "jsonl", want: 3},
		{name: "csv errors name every bad line", file: "bad.csv", format: "csv", code: sidecar.EINVALID,
			errHas: []string{"line 2: want 2 fields", "line 3: ", "line 4: want 2 fields", "line 5: customer acme already assigned on line 1"}},
		{name: "json lines errors name every bad line", file: "bad.jsonl", format: "jsonl", code: sidecar.EINVALID,
			errHas: []string{"line 2: customer and domain are required", "line 3: malformed JSON", "line 4: malformed JSON: unknown field", "line 5: malformed JSON: customer must be a string"}},
		{name: "unterminated quote", data: "acme,\"shop-a\n", format: "csv", code: sidecar.EINVALID, errHas: []string{"line 1"}},
		{name: "empty file", data: "", format: "csv", code: sidecar.EINVALID, errHas: []string{"no assignments"}},
		{name: "header only", data: "customer,domain\n", format: "csv", code: sidecar.EINVALID},
		{name: "too many rows", data: "a,d\nb,d\nc,d\n", format: "csv", maxRows: 2, code: sidecar.ETOOLARGE},
		{name: "too many json rows", data: "{\"customer\":\"a\",\"domain\":\"d\"}\n{\"customer\":\"b\",\"domain\":\"d\"}\n", format: "jsonl", maxRows: 1, code: sidecar.ETOOLARGE},
		{name: "two values on one line", data: "{\"customer\":\"a\",\"domain\":\"d\"} {}\n", format: "jsonl", code: sidecar.EINVALID, errHas: []string{"line 1: unexpected data after the JSON value"}},
		{name: "unknown format", data: "a,d\n", format: "xml", code: sidecar.EINVALID},
		// Ids that fold alike are one customer (sidecar.FoldID).
		{name: "csv naming one customer in two spellings", data: "acme,shop-a\nglobex,shop-a\nACME,shop-b\nAcme,shop-b\n", format: "csv", code: sidecar.EINVALID,
			errHas: []string{"line 3: customer ACME already assigned on line 1", "line 4: customer Acme already assigned on line 1"}},
		// Outside the assignable set an upstream's collation may read an
		// id as another: the lines are refused, naming the characters.
		{name: "csv customers outside ASCII", data: "acme,shop-a\nＡＣＭＥ,shop-b\nacm\u00e9,shop-b\n\u200b,shop-a\n\"acme\u00a0\",shop-b\n", format: "csv", code: sidecar.EINVALID,
			errHas: []string{"line 2: customer: must hold only " + sidecar.AssignedIDChars, "line 3: customer: must hold only", "line 4: customer: must hold only", "line 5: customer: must hold only"}},
		{name: "json lines naming one customer in two spellings", data: "{\"customer\":\"acme\",\"domain\":\"shop-a\"}\n{\"customer\":\"ACME\",\"domain\":\"shop-b\"}\n", format: "jsonl", code: sidecar.EINVALID,
			errHas: []string{"line 2: customer ACME already assigned on line 1"}},
		{name: "csv invalid UTF-8", data: "acme,shop-a\ngl\xf6bex,shop-a\n", format: "csv", code: sidecar.EINVALID,
			errHas: []string{"line 2: customer: invalid UTF-8"}},
		{name: "json lines invalid UTF-8", data: "{\"customer\":\"acme\",\"domain\":\"sh\xf6p\"}\n", format: "jsonl", code: sidecar.EINVALID,
			errHas: []string{"line 1: domain: invalid UTF-8"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.data)
			if tc.file != "" {
				var err error
				if data, err = os.ReadFile(filepath.Join("testdata", "reseller", tc.file)); err != nil {
					t.Fatal(err)
				}
			}
			max := tc.maxRows
			if max == 0 {
				max = 100
			}
			rows, err := delegation.ParseAssignments(data, tc.format, max)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) != tc.want || rows[0].Customer != "acme" || rows[1].Customer != "globex" || rows[1].Domain != "shop-a.example" {
					t.Fatalf("rows = %+v, want %d", rows, tc.want)
				}
				return
			}
			wantCode(t, err, tc.code, "")
			if rows != nil {
				t.Fatalf("rows = %+v alongside an error", rows)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(sidecar.ErrorMessage(err), s) {
					t.Errorf("error %q does not mention %q", sidecar.ErrorMessage(err), s)
				}
			}
		})
	}
}

func FuzzParseAssignments(f *testing.F) {
	for _, name := range []string{"assignments.csv", "assignments.jsonl", "bad.csv", "bad.jsonl"} {
		b, err := os.ReadFile(filepath.Join("testdata", "reseller", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, strings.HasSuffix(name, ".jsonl"))
	}
	f.Fuzz(func(t *testing.T, data []byte, jsonl bool) {
		format := delegation.FormatCSV
		if jsonl {
			format = delegation.FormatJSONLines
		}
		rows, err := delegation.ParseAssignments(data, format, 50)
		if err != nil {
			var e *sidecar.Error
			if !errors.As(err, &e) || (e.Code != sidecar.EINVALID && e.Code != sidecar.ETOOLARGE) {
				t.Fatalf("error %v is not a client error", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, r := range rows {
			if r.Customer == "" || r.Domain == "" || seen[sidecar.FoldID(r.Customer)] || r.Line < 1 {
				t.Fatalf("bad row accepted: %+v", r)
			}
			seen[sidecar.FoldID(r.Customer)] = true
		}
	})
}

var superAdmin = &sidecar.Identity{Subject: "sam", Org: "resellerco", Domain: "shop-a.example", Roles: []string{"reseller_super_admin"}}

func TestResellerAssignments(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			rs := delegation.NewResellers(env.store, delegation.ResellerConfig{}, delegation.WithResellerClock(env.clock.Now))

			if _, err := rs.Put(ctx, superAdmin, "acme", "shop-a.example", allowAll); err != nil {
				t.Fatal(err)
			}
			a, err := rs.Get(ctx, superAdmin, "acme", allowAll)
			if err != nil || a.Domain != "shop-a.example" || a.Reseller != "resellerco" || a.UpdatedBy != "sam" {
				t.Fatalf("Get = %+v, %v", a, err)
			}
			_, err = rs.Put(ctx, superAdmin, "ac me", "shop-a.example", allowAll)
			wantCode(t, err, sidecar.EINVALID, "")
			_, err = rs.Put(ctx, superAdmin, "acme", "", allowAll)
			wantCode(t, err, sidecar.EINVALID, "")
			// Filed under its folded form, which would be empty.
			_, err = rs.Put(ctx, superAdmin, "\u200b\u0301", "shop-a.example", allowAll)
			wantCode(t, err, sidecar.EINVALID, "")

			if err := rs.Delete(ctx, superAdmin, "acme", allowAll); err != nil {
				t.Fatal(err)
			}
			if err := rs.Delete(ctx, superAdmin, "acme", allowAll); err != nil {
				t.Fatalf("deleting twice: %v", err)
			}
			_, err = rs.Get(ctx, superAdmin, "acme", allowAll)
			wantCode(t, err, sidecar.ENOTFOUND, "")

			es := events(t, env.store, sidecar.EventAssignmentChanged)
			if len(es) != 2 || es[0].Data["change"] != "put" || es[1].Data["change"] != "delete" {
				t.Fatalf("assignment events = %+v, want put then delete", es)
			}

			rows, err := delegation.ParseAssignments([]byte("c1,shop-a.example\nc2,shop-a.example\nc3,shop-a.example\n"), "csv", 10)
			if err != nil {
				t.Fatal(err)
			}
			n, err := rs.Import(ctx, superAdmin, rows, allowAll)
			if err != nil || n != 3 {
				t.Fatalf("Import = %d, %v", n, err)
			}
			page, next, err := rs.List(ctx, superAdmin, sidecar.Page{Limit: 2}, allowAll)
			if err != nil || len(page) != 2 || page[0].Customer != "c1" || next == "" {
				t.Fatalf("List = %+v, %q, %v", page, next, err)
			}
			page, next, _ = rs.List(ctx, superAdmin, sidecar.Page{Limit: 2, Cursor: next}, allowAll)
			if len(page) != 1 || page[0].Customer != "c3" || next != "" {
				t.Fatalf("second page = %+v, %q", page, next)
			}
		})
	}
}

func TestResellerConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   delegation.ResellerConfig
		field string
	}{
		{name: "defaults", cfg: delegation.ResellerDefaults()},
		{name: "negative rows", cfg: delegation.ResellerConfig{MaxImportRows: -1}, field: "reseller.max_import_rows"},
		{name: "huge import", cfg: delegation.ResellerConfig{MaxImportBytes: 1 << 30}, field: "reseller.max_import_bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if got := sidecar.ErrorField(err); got != tc.field || (tc.field == "") != (err == nil) {
				t.Fatalf("Validate() = %v, want field %q", err, tc.field)
			}
		})
	}
}
