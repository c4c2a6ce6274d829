package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/clock"
)

// The journal lets a gateway follow KV without re-reading it. Every write of a record
// (service, revision config, failure) also writes, in the same Consul transaction, a tiny
// entry at JournalKey(record key) saying what happened and when. A gateway lists
// everything once, then blocks on JournalPrefix alone and reads only the records whose
// entry moved past the index it has seen. Writers compact the journal: entries older than
// a horizon (or beyond the newest MaxEntries) are removed with check-and-set deletes, in
// the same transaction that raises the floor (FloorKey) to the highest index removed. A
// reader whose index is below the floor may have missed a removed entry and lists
// everything again. docs/architecture.md has the reasoning.
const (
	// JournalPrefix holds one entry per record key that changed lately.
	JournalPrefix = Prefix + "journal/"
	// FloorKey holds the journal's floor; "_" cannot start a Nomad namespace, so no entry
	// (journal/<kind>/<ns>/<name>) can take its name.
	FloorKey = JournalPrefix + "_floor"
)

// Journal defaults (Options' zero values).
const (
	// DefaultJournalHorizon is how long an entry stays: a gateway that lost Consul for
	// less than this catches up with a few reads instead of a full listing.
	DefaultJournalHorizon = 5 * time.Minute
	// DefaultJournalMaxEntries caps the journal (and so what every gateway receives on
	// each change) after a burst: the oldest beyond it go at the next compaction.
	DefaultJournalMaxEntries = 1024
	// DefaultCompactEvery is how often (at most, over all writers) one compacts.
	DefaultCompactEvery = 30 * time.Second
)

// Journal operations.
const (
	OpPut    = "put"
	OpDelete = "delete"
)

// JournalEntry is the value at a journal key.
type JournalEntry struct {
	Op string    `json:"op"` // OpPut or OpDelete: what the last write of the record did
	At time.Time `json:"at"` // the writer's clock; compaction ages entries by it
}

// Floor is the value at FloorKey.
type Floor struct {
	// Index: journal entries at or below it may have been removed. A reader that has seen
	// the journal only up to a lower index must list everything again.
	Index uint64 `json:"index"`
	// CompactedAt is when the last compaction ran: writers skip compacting until
	// DefaultCompactEvery has passed.
	CompactedAt time.Time `json:"compacted_at"`
}

// JournalKey is the journal key of a record key.
func JournalKey(recordKey string) string {
	return JournalPrefix + strings.TrimPrefix(recordKey, Prefix)
}

// RecordKeyOf is the record key a journal key stands for; ok is false for the floor and
// for keys that are no journal entry.
func RecordKeyOf(journalKey string) (string, bool) {
	rest, ok := strings.CutPrefix(journalKey, JournalPrefix)
	if !ok || journalKey == FloorKey || strings.Count(rest, "/") < 2 {
		return "", false
	}
	return Prefix + rest, true
}

// DecodeJournalEntry reads a journal entry's value.
func DecodeJournalEntry(p *consulapi.KVPair) (JournalEntry, error) {
	var e JournalEntry
	if err := json.Unmarshal(p.Value, &e); err != nil {
		return JournalEntry{}, fmt.Errorf("consul key %s: %w", p.Key, err)
	}
	if e.Op != OpPut && e.Op != OpDelete {
		return JournalEntry{}, fmt.Errorf("consul key %s: journal op %q", p.Key, e.Op)
	}
	return e, nil
}

// DecodeFloor reads the floor's value (nil pair: no floor yet, index 0).
func DecodeFloor(p *consulapi.KVPair) (Floor, error) {
	var f Floor
	if p == nil {
		return f, nil
	}
	if err := json.Unmarshal(p.Value, &f); err != nil {
		return Floor{}, fmt.Errorf("consul key %s: %w", p.Key, err)
	}
	return f, nil
}

// Options tune a Store; zero values are the defaults.
type Options struct {
	Clock             clock.Clock // nil: the wall clock
	JournalHorizon    time.Duration
	JournalMaxEntries int
	CompactEvery      time.Duration
}

func (o Options) withDefaults() Options {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.JournalHorizon <= 0 {
		o.JournalHorizon = DefaultJournalHorizon
	}
	if o.JournalMaxEntries <= 0 {
		o.JournalMaxEntries = DefaultJournalMaxEntries
	}
	if o.CompactEvery <= 0 {
		o.CompactEvery = DefaultCompactEvery
	}
	return o
}

// errStale is a check-and-set write that lost the race.
var errStale = errors.New("index is stale")

// write runs op on key together with its journal entry and a read of the floor, as one
// transaction, then compacts the journal when the floor says it is due. A CAS op that
// lost the race returns errStale.
func (s *Store) write(ctx context.Context, key string, op *consulapi.KVTxnOp, jop string) error {
	entry, err := json.Marshal(JournalEntry{Op: jop, At: s.opts.Clock.Now().UTC()})
	if err != nil {
		return err
	}
	op.Key = key
	ops := consulapi.TxnOps{
		{KV: op},
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVSet, Key: JournalKey(key), Value: entry}},
		// get-tree, not get: a missing floor must not fail the write.
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVGetTree, Key: FloorKey}},
	}
	resp, err := s.txn(ctx, ops)
	if err != nil {
		return fmt.Errorf("%s %s in consul: %w", verbWord(op.Verb), key, err)
	}
	var floorPair *consulapi.KVPair
	for _, r := range resp.Results {
		if r.KV != nil && r.KV.Key == FloorKey {
			floorPair = r.KV
		}
	}
	if f, err := DecodeFloor(floorPair); err != nil || floorPair == nil || s.opts.Clock.Now().Sub(f.CompactedAt) >= s.opts.CompactEvery {
		// Best effort, one try: a failed compaction only leaves the journal longer until
		// the next writer's turn, and one that lost the race to another compactor has
		// nothing left to do. Neither loses an entry a reader needs.
		_ = s.compactOnce(ctx)
	}
	return nil
}

func verbWord(v consulapi.KVOp) string {
	if v == consulapi.KVDelete || v == consulapi.KVDeleteCAS {
		return "delete"
	}
	return "write"
}

// txn runs ops; a transaction Consul rolled back is an error (errStale when a CAS lost,
// a 403 StatusError when the token may not, as the non-transactional calls report it).
func (s *Store) txn(ctx context.Context, ops consulapi.TxnOps) (*consulapi.TxnResponse, error) {
	ok, resp, _, err := s.tx.Txn(ops, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	if ok {
		return resp, nil
	}
	var msgs []string
	for _, e := range resp.Errors {
		switch {
		case strings.Contains(e.What, "index is stale"):
			return nil, errStale
		case strings.Contains(e.What, "ermission denied"):
			return nil, consulapi.StatusError{Code: 403, Body: e.What}
		}
		msgs = append(msgs, e.What)
	}
	return nil, fmt.Errorf("transaction rolled back: %s", strings.Join(msgs, "; "))
}

// CompactJournal removes the entries older than the horizon and the oldest beyond the
// cap, raising the floor in the same transactions; it also stamps the floor's
// CompactedAt so other writers skip their turn. A concurrent compaction or write makes a
// batch fail as a whole (check-and-set), and it is retried from a new listing.
func (s *Store) CompactJournal(ctx context.Context) error {
	var err error
	for range 3 {
		if err = s.compactOnce(ctx); !errors.Is(err, errStale) {
			return err
		}
	}
	return err
}

// maxTxnOps is Consul's limit of operations per transaction.
const maxTxnOps = 64

func (s *Store) compactOnce(ctx context.Context) error {
	pairs, _, err := s.kv.List(JournalPrefix, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list %s from consul: %w", JournalPrefix, err)
	}
	var floorPair *consulapi.KVPair
	entries := make([]*consulapi.KVPair, 0, len(pairs))
	for _, p := range pairs {
		switch _, isEntry := RecordKeyOf(p.Key); {
		case p.Key == FloorKey:
			floorPair = p
		case isEntry:
			entries = append(entries, p)
		}
	}
	floor, _ := DecodeFloor(floorPair) // one that does not decode is rewritten
	floorIdx := uint64(0)              // CAS index: 0 creates the floor only if it is absent
	if floorPair != nil {
		floorIdx = floorPair.ModifyIndex
	}
	now := s.opts.Clock.Now().UTC()
	// Oldest first, by index: each batch raises the floor only over entries below the
	// ones it keeps.
	slices.SortFunc(entries, func(a, b *consulapi.KVPair) int { return cmp.Compare(a.ModifyIndex, b.ModifyIndex) })
	cut := max(0, len(entries)-s.opts.JournalMaxEntries)
	for cut < len(entries) {
		e, err := DecodeJournalEntry(entries[cut])
		if err == nil && now.Sub(e.At) < s.opts.JournalHorizon {
			break
		}
		cut++
	}
	drop := entries[:cut]
	for {
		n := min(len(drop), maxTxnOps-1)
		ops := make(consulapi.TxnOps, 0, n+1)
		for _, p := range drop[:n] {
			ops = append(ops, &consulapi.TxnOp{KV: &consulapi.KVTxnOp{Verb: consulapi.KVDeleteCAS, Key: p.Key, Index: p.ModifyIndex}})
			floor.Index = max(floor.Index, p.ModifyIndex)
		}
		floor.CompactedAt = now
		b, err := json.Marshal(floor)
		if err != nil {
			return err
		}
		ops = append(ops, &consulapi.TxnOp{KV: &consulapi.KVTxnOp{Verb: consulapi.KVCAS, Key: FloorKey, Value: b, Index: floorIdx}})
		resp, err := s.txn(ctx, ops)
		if err != nil {
			return err
		}
		for _, r := range resp.Results {
			if r.KV != nil && r.KV.Key == FloorKey {
				floorIdx = r.KV.ModifyIndex
			}
		}
		drop = drop[n:]
		if len(drop) == 0 {
			return nil
		}
	}
}
