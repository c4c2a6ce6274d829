package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/revmeta"
)

func TestJournalKeys(t *testing.T) {
	for rec, ok := range map[string]bool{
		ServiceKey("default", "hello"):           true,
		RevisionKey("prod", "hello-00001"):       true,
		FailureKey("default", "hello-00002"):     true,
		Prefix + "scaler/leader":                 false, // one segment below its kind: not an entry
		Prefix + "journal/services/default/loop": true,  // round-trips, though nobody writes it
	} {
		j := JournalKey(rec)
		got, gotOK := RecordKeyOf(j)
		if gotOK != ok || (ok && got != rec) {
			t.Errorf("RecordKeyOf(JournalKey(%q)) = %q, %v", rec, got, gotOK)
		}
	}
	if _, ok := RecordKeyOf(FloorKey); ok {
		t.Error("the floor is an entry")
	}
}

func journal(t *testing.T, c *consulapi.Client) (entries map[string]*consulapi.KVPair, floor *consulapi.KVPair) {
	t.Helper()
	pairs, _, err := c.KV().List(JournalPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries = map[string]*consulapi.KVPair{}
	for _, p := range pairs {
		if p.Key == FloorKey {
			floor = p
		} else {
			entries[p.Key] = p
		}
	}
	return entries, floor
}

// Each write journals its key in the same transaction: same index as the record, the
// right op; a lost CAS writes neither.
func TestJournalWrittenWithRecord(t *testing.T) {
	ctx := context.Background()
	s := New(cluster.Consul)
	if _, err := s.UpdateService(ctx, "jrnl", "a", func(*Service) (*Service, error) { return &Service{Generation: 1}, nil }); err != nil {
		t.Fatal(err)
	}
	rec, _, err := cluster.Consul.KV().Get(ServiceKey("jrnl", "a"), nil)
	if err != nil || rec == nil {
		t.Fatal(rec, err)
	}
	entries, floor := journal(t, cluster.Consul)
	e := entries[JournalKey(ServiceKey("jrnl", "a"))]
	if e == nil || e.ModifyIndex != rec.ModifyIndex {
		t.Fatalf("journal entry %+v, record at %d", e, rec.ModifyIndex)
	}
	if je, err := DecodeJournalEntry(e); err != nil || je.Op != OpPut {
		t.Fatalf("entry %+v %v", je, err)
	}
	if floor == nil {
		t.Fatal("no floor after the first write (the writer compacts when there is none)")
	}

	// A CAS with a stale index fails, and writes no journal entry either.
	err = s.write(ctx, ServiceKey("jrnl", "a"), &consulapi.KVTxnOp{Verb: consulapi.KVCAS, Value: []byte("{}"), Index: rec.ModifyIndex - 1}, OpPut)
	if !errors.Is(err, errStale) {
		t.Fatalf("stale CAS: %v", err)
	}
	if entries, _ := journal(t, cluster.Consul); entries[e.Key].ModifyIndex != e.ModifyIndex {
		t.Fatal("a rolled-back write moved the journal")
	}

	if err := s.DeleteService(ctx, "jrnl", "a"); err != nil {
		t.Fatal(err)
	}
	entries, _ = journal(t, cluster.Consul)
	if je, err := DecodeJournalEntry(entries[e.Key]); err != nil || je.Op != OpDelete || entries[e.Key].ModifyIndex <= e.ModifyIndex {
		t.Fatalf("after delete: %+v %v", je, err)
	}
}

// Compaction removes what is older than the horizon and what is beyond the cap, oldest
// first, and raises the floor to exactly the highest index it removed; what it keeps is
// all above the floor.
func TestCompactJournal(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Now())
	s := NewWith(cluster.Consul, Options{Clock: clk, JournalHorizon: time.Minute, JournalMaxEntries: 1000, CompactEvery: time.Hour})
	if err := s.CompactJournal(ctx); err != nil { // stamps the floor: no writer compacts meanwhile
		t.Fatal(err)
	}
	clk.Step(2 * time.Minute)
	if err := s.CompactJournal(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 70 { // more than one transaction's worth
		if err := s.PutRevision(ctx, revmeta.Defaults("cmp", "old", fmt.Sprintf("old-%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	clk.Step(90 * time.Second)
	for i := range 3 {
		if err := s.PutRevision(ctx, revmeta.Defaults("cmp", "new", fmt.Sprintf("new-%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := journal(t, cluster.Consul)
	var oldMax uint64
	for k, p := range before {
		if rk, _ := RecordKeyOf(k); rk >= RevisionKey("cmp", "old-") && rk < RevisionKey("cmp", "old.") {
			oldMax = max(oldMax, p.ModifyIndex)
		}
	}
	if err := s.CompactJournal(ctx); err != nil {
		t.Fatal(err)
	}
	after, floorPair := journal(t, cluster.Consul)
	floor, err := DecodeFloor(floorPair)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 3 || floor.Index != oldMax || !floor.CompactedAt.Equal(clk.Now()) {
		t.Fatalf("kept %d entries (want the 3 new), floor %+v (want index %d)", len(after), floor, oldMax)
	}
	for k, p := range after {
		if p.ModifyIndex <= floor.Index {
			t.Errorf("kept %s at %d, at or below the floor %d", k, p.ModifyIndex, floor.Index)
		}
	}

	// The cap: beyond MaxEntries the oldest go, however young.
	capped := NewWith(cluster.Consul, Options{Clock: clk, JournalHorizon: time.Hour, JournalMaxEntries: 2, CompactEvery: time.Hour})
	if err := capped.CompactJournal(ctx); err != nil {
		t.Fatal(err)
	}
	after2, floorPair := journal(t, cluster.Consul)
	floor2, _ := DecodeFloor(floorPair)
	if len(after2) != 2 || after2[JournalKey(RevisionKey("cmp", "new-00000"))] != nil || floor2.Index != after[JournalKey(RevisionKey("cmp", "new-00000"))].ModifyIndex {
		t.Fatalf("capped: %d entries, floor %+v", len(after2), floor2)
	}
}

// A compaction that lost the race to a writer (an entry it meant to remove was written
// again) removes nothing and leaves the floor as it was: the new entry is never lost.
func TestCompactLosesToWriter(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Now())
	s := NewWith(cluster.Consul, Options{Clock: clk, JournalHorizon: time.Minute, CompactEvery: time.Hour})
	if err := s.PutRevision(ctx, revmeta.Defaults("race", "r", "r-00001")); err != nil {
		t.Fatal(err)
	}
	clk.Step(2 * time.Minute)
	// What a compactor listed, then a writer moved the entry before the delete landed.
	entries, floorPair := journal(t, cluster.Consul)
	key := JournalKey(RevisionKey("race", "r-00001"))
	stale := entries[key]
	if err := s.PutRevision(ctx, revmeta.Defaults("race", "r", "r-00001")); err != nil {
		t.Fatal(err)
	}
	_, err := s.txn(ctx, consulapi.TxnOps{
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVDeleteCAS, Key: key, Index: stale.ModifyIndex}},
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVCAS, Key: FloorKey, Value: []byte(`{"index":999999999}`), Index: floorPair.ModifyIndex}},
	})
	if !errors.Is(err, errStale) {
		t.Fatalf("compaction against a moved entry: %v", err)
	}
	now, floorNow := journal(t, cluster.Consul)
	if now[key] == nil || now[key].ModifyIndex <= stale.ModifyIndex || floorNow.ModifyIndex != floorPair.ModifyIndex {
		t.Fatalf("entry %+v, floor moved from %d to %d", now[key], floorPair.ModifyIndex, floorNow.ModifyIndex)
	}
}
