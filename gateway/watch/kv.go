package watch

import (
	"context"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// KV follows the records under store.Prefix: one full listing at start, then blocking
// queries on the small store.JournalPrefix alone, reading only the records whose journal
// entry moved past the index already applied (internal/store/journal.go). It lists
// everything again when the journal's floor is above that index (entries it never saw
// were compacted away), when the journal's index went backwards (Consul restored or
// replaced), when more records changed at once than reading them one by one is worth, and
// every Resync as a safety net for writers that do not journal. A failed query is retried
// from the same index: the floor makes that safe, and a Consul blip then does not send
// every gateway into a full listing at once.
type KV struct {
	consul *consulapi.Client
	log    *zap.Logger
	clock  clock.Clock
	errs   func()
	opts   KVOptions

	latest  atomic.Pointer[KVState]
	changed signal

	fullLists, recordReads atomic.Int64

	// Owned by Run's goroutine.
	svcs     map[string]*store.Service // by record key
	revs     map[string]revmeta.Config
	fails    map[string]store.Failure
	bad      map[string]error
	seen     uint64 // every journaled write at or below it is applied
	index    uint64 // the published index
	nextFull time.Time
	snap     store.Snapshot // the last published one: its maps are shared, never written
}

// KVOptions tune the KV watcher; zero values are the defaults.
type KVOptions struct {
	// Resync is the most time between two full listings (default 10 min, ±10 % so a fleet
	// started together does not list together).
	Resync time.Duration
	// MaxReads is the most changed records read one by one after one journal answer;
	// more, and one full listing is cheaper (default 256).
	MaxReads int
	// Parallel is how many of those reads are in flight at once (default 8).
	Parallel int
}

// Defaults of KVOptions.
const (
	DefaultResync   = 10 * time.Minute
	DefaultMaxReads = 256
	defaultParallel = 8
)

func (o KVOptions) withDefaults() KVOptions {
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.MaxReads <= 0 {
		o.MaxReads = DefaultMaxReads
	}
	if o.Parallel <= 0 {
		o.Parallel = defaultParallel
	}
	return o
}

// KVState is one decoded state of KV.
type KVState struct {
	// Index is a Consul KV index such that every record write at or below it is in
	// Snapshot: what the gateway publishes as its routes index.
	Index    uint64
	Snapshot store.Snapshot
	Errors   []error // records that did not decode (left out of Snapshot)
}

// NewKV returns a KV watcher with the default options; onError (may be nil) counts
// failed queries.
func NewKV(c *consulapi.Client, log *zap.Logger, clk clock.Clock, onError func()) *KV {
	return NewKVWith(c, log, clk, onError, KVOptions{})
}

// NewKVWith is NewKV with options.
func NewKVWith(c *consulapi.Client, log *zap.Logger, clk clock.Clock, onError func(), opts KVOptions) *KV {
	return &KV{consul: c, log: log, clock: clk, errs: onError, opts: opts.withDefaults(), changed: newSignal()}
}

// Changed signals that Latest has a new value.
func (w *KV) Changed() <-chan struct{} { return w.changed }

// Latest is the newest state, nil before the first answer.
func (w *KV) Latest() *KVState { return w.latest.Load() }

// FullLists counts the full listings of store.Prefix so far.
func (w *KV) FullLists() int64 { return w.fullLists.Load() }

// RecordReads counts the records read one by one after journal changes.
func (w *KV) RecordReads() int64 { return w.recordReads.Load() }

// Run watches until ctx is done.
func (w *KV) Run(ctx context.Context) {
	loop(ctx, "kv", w.log, w.clock, w.errs, func(ctx context.Context, _ uint64) (uint64, error) {
		if w.latest.Load() == nil || !w.clock.Now().Before(w.nextFull) {
			return w.fullList(ctx, "resync")
		}
		return w.follow(ctx)
	})
}

// fullList replaces the whole state with a listing of store.Prefix.
func (w *KV) fullList(ctx context.Context, why string) (uint64, error) {
	pairs, meta, err := w.consul.KV().List(store.Prefix, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, err
	}
	w.fullLists.Add(1)
	if w.latest.Load() != nil {
		w.log.Info("listing every KV record", zap.String("why", why), zap.Int("keys", len(pairs)))
	}
	w.svcs, w.revs, w.fails, w.bad = map[string]*store.Service{}, map[string]revmeta.Config{}, map[string]store.Failure{}, map[string]error{}
	var journal uint64
	hasJournal := false
	for _, p := range pairs {
		if p.Key == store.FloorKey {
			journal, hasJournal = max(journal, p.ModifyIndex), true
		} else if _, ok := store.RecordKeyOf(p.Key); ok {
			journal, hasJournal = max(journal, p.ModifyIndex), true
		} else {
			w.set(p.Key, p)
		}
	}
	// The journal is in the same listing, so every entry up to its highest index is
	// applied, and any later entry has a higher one. With no journal key at all, start
	// from 0: the first answer then comes at once and re-reads whatever was journaled
	// since (harmless), and the index to block on is the journal prefix's own.
	w.seen = 0
	if hasJournal {
		w.seen = journal
	}
	w.index = meta.LastIndex
	jitter := time.Duration(rand.Int64N(int64(w.opts.Resync)/5+1)) - w.opts.Resync/10
	w.nextFull = w.clock.Now().Add(w.opts.Resync + jitter)
	w.publish(true, true, true)
	return max(w.seen, 1), nil
}

// follow blocks on the journal and applies what it says changed.
func (w *KV) follow(ctx context.Context) (uint64, error) {
	wait := min(waitTime, max(time.Second, w.nextFull.Sub(w.clock.Now())))
	pairs, meta, err := w.consul.KV().List(store.JournalPrefix, (&consulapi.QueryOptions{WaitIndex: w.seen, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		return 0, err
	}
	if meta.LastIndex < w.seen {
		return w.fullList(ctx, "the journal's index went backwards")
	}
	type change struct {
		key  string
		del  bool
		pair *consulapi.KVPair
	}
	var changes []change
	for _, p := range pairs {
		if p.Key == store.FloorKey {
			f, err := store.DecodeFloor(p)
			if err != nil || f.Index > w.seen {
				return w.fullList(ctx, "the journal was compacted past this gateway's index")
			}
			continue
		}
		key, ok := store.RecordKeyOf(p.Key)
		if !ok || p.ModifyIndex <= w.seen || !store.IsRecordKey(key) {
			continue
		}
		e, err := store.DecodeJournalEntry(p)
		changes = append(changes, change{key: key, del: err == nil && e.Op == store.OpDelete}) // unreadable: read the record
	}
	if len(changes) > w.opts.MaxReads {
		return w.fullList(ctx, "many records changed at once")
	}
	// Read the records that were written, a few at a time; any failure retries the whole
	// answer from the same index.
	sem := make(chan struct{}, w.opts.Parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range changes {
		if changes[i].del {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(c *change) {
			defer func() { <-sem; wg.Done() }()
			p, _, err := w.consul.KV().Get(c.key, (&consulapi.QueryOptions{}).WithContext(ctx))
			w.recordReads.Add(1)
			if err != nil {
				mu.Lock()
				firstErr = cmpOr(firstErr, err)
				mu.Unlock()
				return
			}
			c.pair = p
		}(&changes[i])
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	var svcs, revs, fails bool
	for _, c := range changes {
		s, r, f := w.set(c.key, c.pair) // nil pair: deleted (or deleted since its entry)
		svcs, revs, fails = svcs || s, revs || r, fails || f
	}
	w.seen = max(w.seen, meta.LastIndex, 1)
	if len(changes) > 0 {
		w.index = max(w.index, meta.LastIndex)
		w.publish(svcs, revs, fails)
	}
	return w.seen, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// set applies one record key's current pair (nil: gone) and says which part of the
// snapshot changed.
func (w *KV) set(key string, p *consulapi.KVPair) (svcs, revs, fails bool) {
	_, svcs = w.svcs[key]
	_, revs = w.revs[key]
	_, fails = w.fails[key]
	delete(w.svcs, key)
	delete(w.revs, key)
	delete(w.fails, key)
	delete(w.bad, key)
	if p == nil {
		return svcs, revs, fails
	}
	rec, ok, err := store.DecodeRecord(p)
	switch {
	case !ok:
	case err != nil:
		w.bad[key] = err
		w.log.Warn("ignoring a KV record that does not decode", zap.Error(err))
	case rec.Service != nil:
		w.svcs[key], svcs = rec.Service, true
	case rec.Revision != nil:
		w.revs[key], revs = *rec.Revision, true
	case rec.Failure != nil:
		w.fails[key], fails = *rec.Failure, true
	}
	return svcs, revs, fails
}

// publish makes a new Snapshot, rebuilding only the parts that changed: the ones that did
// not are shared with the previous Snapshot, which nobody writes.
func (w *KV) publish(svcs, revs, fails bool) {
	snap := w.snap
	if svcs {
		snap.Services = make([]*store.Service, 0, len(w.svcs))
		for _, s := range w.svcs {
			snap.Services = append(snap.Services, s)
		}
		sort.Slice(snap.Services, func(i, j int) bool {
			a, b := snap.Services[i], snap.Services[j]
			if a.Namespace != b.Namespace {
				return a.Namespace < b.Namespace
			}
			return a.Name < b.Name
		})
	}
	if revs || snap.Revisions == nil {
		snap.Revisions = make(map[string]revmeta.Config, len(w.revs))
		for _, c := range w.revs {
			snap.Revisions[c.Namespace+"/"+c.Revision] = c
		}
	}
	if fails || snap.Failures == nil {
		snap.Failures = make(map[string]store.Failure, len(w.fails))
		for _, f := range w.fails {
			snap.Failures[f.Namespace+"/"+f.Revision] = f
		}
	}
	w.snap = snap
	keys := make([]string, 0, len(w.bad))
	for k := range w.bad {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		errs = append(errs, w.bad[k])
	}
	w.latest.Store(&KVState{Index: w.index, Snapshot: snap, Errors: errs})
	w.changed.notify()
}
