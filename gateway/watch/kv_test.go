package watch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// startConsul is a Consul dev agent of the test's own.
func startConsul(t *testing.T) *consulapi.Client {
	t.Helper()
	bins, err := agents.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ag, err := agents.StartConsul(ctx, agents.ConsulOptions{Bin: bins.Consul, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Stop(10 * time.Second) })
	c, err := ag.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runKV runs w until the test ends (or stop is called) and waits for its first state.
func runKV(t *testing.T, w *KV) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	poll.Until(t, 10*time.Second, "the first KV state", poll.True(func() bool { return w.Latest() != nil }))
	return stop
}

// lastRecordWrite is the index of the newest record write a listing of store.Prefix
// shows.
func lastRecordWrite(t *testing.T, pairs consulapi.KVPairs) uint64 {
	t.Helper()
	var last uint64
	for _, p := range pairs {
		if p.Key == store.FloorKey {
			f, err := store.DecodeFloor(p)
			if err != nil {
				t.Fatal(err)
			}
			last = max(last, f.Index)
			continue
		}
		last = max(last, p.ModifyIndex)
	}
	return last
}

// canonical is a snapshot in a comparable form.
type canonical struct {
	Services  []store.Service
	Revisions map[string]revmeta.Config
	Failures  map[string]store.Failure
}

func canon(s store.Snapshot) canonical {
	c := canonical{Revisions: s.Revisions, Failures: s.Failures}
	for _, svc := range s.Services {
		c.Services = append(c.Services, *svc)
	}
	sort.Slice(c.Services, func(i, j int) bool {
		return c.Services[i].Namespace+"/"+c.Services[i].Name < c.Services[j].Namespace+"/"+c.Services[j].Name
	})
	for i := range c.Services {
		c.Services[i].UpdatedAt = c.Services[i].UpdatedAt.UTC()
	}
	return c
}

// converged waits until w's state is exactly what a full listing decodes to now, and
// that nothing moves any more (the listing is taken after the writers stopped).
func converged(t *testing.T, c *consulapi.Client, w *KV) {
	t.Helper()
	pairs, _, err := c.KV().List(store.Prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := store.Decode(pairs)
	wc := canon(want)
	poll.Until(t, 15*time.Second, "the watcher to converge to the full listing", func() error {
		st := w.Latest()
		if got := canon(st.Snapshot); !reflect.DeepEqual(got, wc) {
			return fmt.Errorf("%d services, %d revisions, %d failures; want %d, %d, %d", len(got.Services), len(got.Revisions), len(got.Failures),
				len(wc.Services), len(wc.Revisions), len(wc.Failures))
		}
		// What a gateway publishes: the CLI waits for it to pass the index of its write, so
		// it must be at least the last record write's. That is the newest record or
		// journal entry, or the floor for a write whose entry was compacted away; a
		// compaction itself moves the prefix's index but writes no record.
		if last := lastRecordWrite(t, pairs); st.Index < last {
			return fmt.Errorf("state index %d below the last record write's %d", st.Index, last)
		}
		return nil
	})
}

// Concurrent writers, deletes and aggressive compaction (everything older than a
// nanosecond, at most 3 entries, after every few writes) against a real Consul: the
// watcher, reading only what the journal says changed and listing everything only when
// compaction passed it, ends with exactly what a full listing says.
func TestKVConvergesUnderChurnAndCompaction(t *testing.T) {
	c := startConsul(t)
	ctx := context.Background()
	w := NewKVWith(c, zap.NewNop(), clock.Real{}, nil, KVOptions{Resync: time.Hour, MaxReads: 32})
	runKV(t, w)

	names := make([]string, 24)
	for i := range names {
		names[i] = fmt.Sprintf("svc%02d", i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	const writers, ops = 6, 120
	for wr := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := store.New(c)
			rng := rand.New(rand.NewPCG(uint64(wr), 7))
			for i := range ops {
				name := names[rng.IntN(len(names))]
				rev := fmt.Sprintf("%s-%05d", name, rng.IntN(3)+1)
				var err error
				switch rng.IntN(6) {
				case 0, 1:
					_, err = s.UpdateService(ctx, "default", name, func(cur *store.Service) (*store.Service, error) {
						if cur == nil {
							cur = &store.Service{}
						}
						cur.Generation++
						cur.Route = []store.RouteTarget{{Revision: rev, Percent: 100, Tag: fmt.Sprintf("w%d-%d", wr, i)}}
						return cur, nil
					})
				case 2:
					err = s.PutRevision(ctx, revmeta.Defaults("default", name, rev))
				case 3:
					err = s.DeleteService(ctx, "default", name)
				case 4:
					err = s.DeleteRevision(ctx, "default", rev)
				case 5:
					if rng.IntN(2) == 0 {
						err = s.PutFailure(ctx, store.Failure{Namespace: "default", Revision: rev, Reason: "boom", At: time.Now(), Attempt: i})
					} else {
						err = s.DeleteFailure(ctx, "default", rev)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	compact := store.NewWith(c, store.Options{JournalHorizon: time.Nanosecond, JournalMaxEntries: 3})
	stopCompact := make(chan struct{})
	compacted := make(chan int)
	go func() {
		n := 0
		defer func() { compacted <- n }()
		for {
			select {
			case <-stopCompact:
				return
			case <-time.After(time.Duration(rand.IntN(30)) * time.Millisecond):
			}
			if err := compact.CompactJournal(ctx); err == nil {
				n++
			}
		}
	}()
	wg.Wait()
	close(stopCompact)
	n := <-compacted
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	converged(t, c, w)
	if w.RecordReads() == 0 || n == 0 {
		t.Fatalf("the incremental path was not exercised: %d record reads, %d compactions", w.RecordReads(), n)
	}
	t.Logf("%d compactions; the watcher read %d records one by one and listed everything %d times", n, w.RecordReads(), w.FullLists())
}

// A gateway away for longer than the journal keeps entries (here: its watch stopped,
// then everything compacted) finds the floor above its index and lists everything once;
// one away for less catches up with one read per changed record and no listing.
func TestKVBelowFloorRelists(t *testing.T) {
	c := startConsul(t)
	ctx := context.Background()
	s := store.New(c)
	put := func(name, tag string) {
		t.Helper()
		if _, err := s.UpdateService(ctx, "default", name, func(*store.Service) (*store.Service, error) {
			return &store.Service{Route: []store.RouteTarget{{Revision: name + "-00001", Percent: 100, Tag: tag}}}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		put(fmt.Sprintf("s%d", i), "a")
	}
	w := NewKVWith(c, zap.NewNop(), clock.Real{}, nil, KVOptions{Resync: time.Hour})
	stop := runKV(t, w)
	converged(t, c, w)
	if w.FullLists() != 1 {
		t.Fatalf("%d full listings at start, want 1", w.FullLists())
	}

	// Away briefly: two changes, nothing compacted.
	stop()
	put("s1", "b")
	if err := s.DeleteService(ctx, "default", "s2"); err != nil {
		t.Fatal(err)
	}
	reads := w.RecordReads()
	stop = runKV(t, w)
	converged(t, c, w)
	if w.FullLists() != 1 || w.RecordReads() != reads+1 { // the delete needs no read
		t.Fatalf("after a short absence: %d full listings (want 1), %d record reads (want %d)", w.FullLists(), w.RecordReads(), reads+1)
	}

	// Away for longer than the horizon: the change's entry is compacted before it looks.
	stop()
	put("s3", "c")
	if err := store.NewWith(c, store.Options{JournalHorizon: time.Nanosecond}).CompactJournal(ctx); err != nil {
		t.Fatal(err)
	}
	if entries, _, _ := c.KV().List(store.JournalPrefix, nil); len(entries) != 1 {
		t.Fatalf("journal after compaction: %d keys, want only the floor", len(entries))
	}
	runKV(t, w)
	converged(t, c, w)
	if w.FullLists() != 2 {
		t.Fatalf("below the floor: %d full listings, want 2", w.FullLists())
	}
	if r := w.Latest().Snapshot.Services; len(r) != 4 {
		t.Fatalf("services %d, want 4", len(r))
	}
}

// A record written without its journal entry (an older rouse, a hand edit) shows up at
// the next resync, and only then.
func TestKVResyncCatchesUnjournaledWrite(t *testing.T) {
	c := startConsul(t)
	if err := store.New(c).PutRevision(context.Background(), revmeta.Defaults("default", "j", "j-00001")); err != nil {
		t.Fatal(err)
	}
	w := NewKVWith(c, zap.NewNop(), clock.Real{}, nil, KVOptions{Resync: 3 * time.Second})
	runKV(t, w)
	b := []byte(`{"namespace":"default","name":"hand","route":[{"revision":"hand-00001","percent":100}]}`)
	if _, err := c.KV().Put(&consulapi.KVPair{Key: store.ServiceKey("default", "hand"), Value: b}, nil); err != nil {
		t.Fatal(err)
	}
	lists := w.FullLists()
	took := poll.Until(t, 10*time.Second, "the hand-written record", poll.True(func() bool {
		return len(w.Latest().Snapshot.Services) == 1
	}))
	if w.FullLists() != lists+1 || took < 1500*time.Millisecond {
		t.Fatalf("seen after %s with %d more listings: not by the resync", took, w.FullLists()-lists)
	}
}
