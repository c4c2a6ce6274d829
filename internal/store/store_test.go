package store

import (
	"context"
	"os"
	"sort"
	"sync"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/revmeta"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(testcluster.Run(m, testcluster.Options{}, &cluster)) }

// Concurrent writers each take a generation; CAS must hand out every number exactly once.
func TestUpdateServiceCASNoLostUpdate(t *testing.T) {
	s := New(cluster.Consul)
	ctx := context.Background()
	const writers = 12
	var mu sync.Mutex
	var got []int
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc, err := s.UpdateService(ctx, "default", "cas", func(cur *Service) (*Service, error) {
				if cur == nil {
					cur = &Service{}
				}
				cur.Generation++
				return cur, nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got = append(got, svc.Generation)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Ints(got)
	for i, g := range got {
		if g != i+1 {
			t.Fatalf("generations %v: want 1..%d each once", got, writers)
		}
	}
	final, err := s.GetService(ctx, "default", "cas")
	if err != nil || final.Generation != writers || final.ModifyIndex() == 0 {
		t.Fatalf("final %+v %v", final, err)
	}
}

func TestSnapshotDecodeSkipsBadRecord(t *testing.T) {
	s := New(cluster.Consul)
	ctx := context.Background()
	if _, err := s.UpdateService(ctx, "default", "snap", func(*Service) (*Service, error) {
		return &Service{Route: []RouteTarget{{Revision: "snap-00001", Percent: 100}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRevision(ctx, revmeta.Defaults("default", "snap", "snap-00001")); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Consul.KV().Put(&consulapi.KVPair{Key: ServiceKey("default", "broken"), Value: []byte("{")}, nil); err != nil {
		t.Fatal(err)
	}
	pairs, _, err := cluster.Consul.KV().List(Prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, errs := Decode(pairs)
	if len(errs) != 1 {
		t.Fatalf("want 1 decode error (the broken record), got %v", errs)
	}
	found := false
	for _, svc := range snap.Services {
		found = found || (svc.Name == "snap" && svc.Route[0].Revision == "snap-00001")
	}
	if !found || snap.Revisions["default/snap-00001"].Revision != "snap-00001" {
		t.Fatalf("snapshot %+v", snap)
	}
	if err := s.DeleteService(ctx, "default", "snap"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetService(ctx, "default", "snap"); got != nil {
		t.Fatal("deleted record still there")
	}
}

func TestResolve(t *testing.T) {
	r, err := Resolve([]TrafficTarget{{Revision: "a-00001", Percent: 90, Tag: "stable"}, {Latest: true, Percent: 10}}, "a-00002")
	if err != nil || r[1].Revision != "a-00002" || r[0].Tag != "stable" {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := Resolve([]TrafficTarget{{Latest: true, Percent: 100}}, ""); err == nil {
		t.Fatal("latest with no ready revision resolved")
	}
}
