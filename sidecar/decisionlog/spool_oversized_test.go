package decisionlog

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func spoolRecord(t *testing.T, id string, in any) []byte {
	t.Helper()
	r := &Record{DecisionID: id, Time: time.Unix(1, 0).UTC(), Result: ResultDeny, Input: in}
	b, err := r.encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A record longer than one read of the spool (a header of "<", escaped
// sixfold) cannot be delivered: it alone is skipped, never the records
// after it in its segment.
func TestSpoolSkipsOnlyAnOversizedRecord(t *testing.T) {
	sp, err := openSpool(t.TempDir(), 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	huge := spoolRecord(t, "huge", map[string]any{"headers": map[string]any{"x-junk": strings.Repeat("<", 200_000)}})
	if len(huge) <= readChunk {
		t.Fatalf("record of %d bytes is within one read (%d)", len(huge), readChunk)
	}
	batch := [][]byte{spoolRecord(t, "before", nil), huge}
	var want []string
	for i := range 100 {
		id := fmt.Sprint("after-", i)
		batch = append(batch, spoolRecord(t, id, nil))
		want = append(want, id)
	}
	if kept, err := sp.append(batch, 0); err != nil || kept != len(batch) {
		t.Fatal(kept, err)
	}
	want = append([]string{"before"}, want...)
	var delivered []string
	skipped := 0
	for range 50 {
		recs, err := sp.read(10)
		if err != nil {
			skipped++
			continue
		}
		for _, r := range recs {
			var m map[string]any
			if err := json.Unmarshal(r, &m); err != nil {
				t.Fatal(err)
			}
			delivered = append(delivered, m["decision_id"].(string))
		}
		if err := sp.ack(); err != nil {
			t.Fatal(err)
		}
		if sp.empty() {
			break
		}
	}
	if !slices.Equal(delivered, want) || skipped != 1 {
		t.Fatalf("delivered %d records (%v...), %d skips; want every record but the oversized one, one skip", len(delivered), delivered[:min(3, len(delivered))], skipped)
	}
}
