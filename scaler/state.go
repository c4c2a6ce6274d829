package scaler

import (
	"sync"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// revKey names a revision the way the gauges do: rouse namespace and revision name.
type revKey struct{ ns, rev string }

func (k revKey) String() string { return k.ns + "/" + k.rev }

// jobKey names a revision the way Nomad does.
type jobKey struct{ ns, id string }

// revision is everything the leader knows about one revision job.
type revision struct {
	key      revKey
	job      jobKey
	created  uint64 // the job's CreateIndex: a job purged and registered again is new
	cfgIndex uint64 // JobModifyIndex the config was parsed at
	kpa      *kpa.Revision

	ready      int    // Running allocs of the group, from the job list's summary
	want       int    // the count we want Nomad at: Decide's "current"
	nomad      int    // the count Nomad has, as of countIndex
	countIndex uint64 // JobModifyIndex at which nomad is known; 0 = unknown, fetch it
	seen       uint64 // the listing generation that last had this job
	unlisted   bool   // read from Nomad for an activation (learn); no listing had it yet
	learnedGen uint64 // the listing generation when it was read

	// Summed over the gateways that answered this tick.
	conc, rps float64
	held      int64

	last      kpa.Decision
	lastErr   string    // the last scale error, so each distinct one is logged once
	rechecked time.Time // when an activation last re-read the count from Nomad

	specHash string // the revision's template hash, from its meta
	gwReady  int64  // instances the gateways route to, summed over those that answered this tick

	// A wake that failed (failwatch.go).
	failure     *store.Failure // the record published for the last failure; nil when none stands
	failedUntil time.Time      // nothing wakes it before this
	attempts    int            // failures in a row: the backoff doubles with each
	wakeIndex   uint64         // allocations created after this JobModifyIndex belong to the current wake
	scalingUp   bool           // a Jobs.Scale up is in flight: the allocations are not of the new count yet
	watch       *allocWatch    // the allocation watch running, nil when none

	scaleMu sync.Mutex // one Jobs.Scale in flight per job, the latest want wins
}

// gatewayCounters remembers a gateway's request counters to derive RPS.
type gatewayCounters struct {
	at     time.Time
	totals map[revKey]uint64
	seen   uint64
}

// table is the leader's state. Every method is called with Scaler.mu held.
type table struct {
	opts   kpa.Options
	log    *zap.Logger
	gen    uint64
	byJob  map[jobKey]*revision
	byRev  map[revKey]*revision
	gws    map[string]*gatewayCounters
	badCfg map[jobKey]uint64 // meta that failed to parse, by JobModifyIndex: logged once
	// lookups are the activation path's reads of revisions the table lacks (learn).
	lookups map[revKey]*lookup

	// dropped are the revisions sync removed (job gone, or registered again), until the
	// tick's failureTick takes them: their watches end and their failure records go.
	dropped []*revision
	// stored are the failure records found in Consul when leadership began, adopted by
	// their revisions (or deleted) after the first listing; nil once done.
	stored map[revKey]store.Failure
}

func newTable(opts kpa.Options, log *zap.Logger) *table {
	return &table{opts: opts, log: log, byJob: map[jobKey]*revision{}, byRev: map[revKey]*revision{},
		gws: map[string]*gatewayCounters{}, badCfg: map[jobKey]uint64{}, lookups: map[revKey]*lookup{}}
}

// listing is the revision jobs as Nomad listed them, with the oldest index among the
// namespaces' answers. A job created after that index may be missing from the listing
// without being gone: Nomad's list index covers every job the list holds.
type listing struct {
	stubs []*nomadapi.JobListStub
	index uint64
}

// unlistedTicks bounds how many listings may miss a revision read from Nomad for an
// activation (learn) before it is dropped like any job the listing lacks, should the
// listing's index never pass the job's (a Nomad whose indexes went backwards).
const unlistedTicks = 30

// sync brings the table in line with a job listing and returns the revisions whose count
// must be fetched from Nomad (new, or changed by someone since we last knew).
func (t *table) sync(l listing) (needCount []*revision) {
	t.gen++
	for _, j := range l.stubs {
		r, _ := t.adopt(j)
		if r == nil {
			continue
		}
		r.seen, r.unlisted = t.gen, false
		r.ready = 0
		if j.JobSummary != nil {
			r.ready = j.JobSummary.Summary[revmeta.Group].Running
		}
		// A listing older than what a Scale answered us is stale, not a change.
		if r.countIndex == 0 || j.JobModifyIndex > r.countIndex {
			needCount = append(needCount, r)
		}
	}
	for jk, r := range t.byJob {
		if r.seen == t.gen {
			continue
		}
		if r.unlisted && l.index < r.created && t.gen-r.learnedGen <= unlistedTicks {
			continue // read from Nomad after this listing was made: not gone, not listed yet
		}
		delete(t.byJob, jk)
		if t.byRev[r.key] == r {
			delete(t.byRev, r.key)
		}
		t.dropped = append(t.dropped, r)
	}
	return needCount
}

// adopt brings one job, listed or read alone, into the table: a revision new to it, or
// new config for one it knows. It returns nil for a job that is not a revision it can
// scale (stopped, not rouse's, or with unusable meta), and whether the revision is new.
func (t *table) adopt(j *nomadapi.JobListStub) (*revision, bool) {
	if j.Stop || !revmeta.IsRevision(j.Meta) {
		return nil, false
	}
	jk := jobKey{j.Namespace, j.ID}
	r := t.byJob[jk]
	if r != nil && r.created != j.CreateIndex {
		// Same ID, new job (deleted and applied again): its windows, intent and
		// count start from nothing, not from the old job's traffic.
		if t.byRev[r.key] == r {
			delete(t.byRev, r.key)
		}
		delete(t.byJob, jk)
		t.dropped = append(t.dropped, r)
		r = nil
	}
	if r != nil && j.JobModifyIndex <= r.cfgIndex {
		return r, false
	}
	if t.badCfg[jk] == j.JobModifyIndex {
		return nil, false
	}
	cfg, err := revmeta.FromMeta(j.Meta)
	if err != nil {
		t.badCfg[jk] = j.JobModifyIndex
		t.log.Error("revision job has unusable autoscaling meta; not scaling it",
			zap.String("namespace", j.Namespace), zap.String("job", j.ID), zap.Error(err))
		return nil, false
	}
	delete(t.badCfg, jk)
	if cfg.Namespace == "" {
		cfg.Namespace = j.Namespace
	}
	fresh := r == nil
	if fresh {
		r = &revision{key: revKey{cfg.Namespace, cfg.Revision}, job: jk, created: j.CreateIndex, kpa: kpa.New(cfg.Autoscaling, t.opts)}
		t.byJob[jk] = r
		t.byRev[r.key] = r
	} else {
		r.kpa.SetConfig(cfg.Autoscaling)
	}
	r.cfgIndex = j.JobModifyIndex
	r.specHash = cfg.SpecHash
	return r, fresh
}

// learn adds what Nomad answered for one job (Jobs.Info) to the table: the activation
// path's read of a revision the listing does not have yet, or whose count is not known.
// It returns the revision, or nil when the job is not revision k (the gateways' name).
// A revision new to the table stays, unlisted, until a listing made after the job's
// creation has it or not (sync).
func (t *table) learn(k revKey, j *nomadapi.JobListStub, count int) *revision {
	ns := j.Meta[revmeta.KeyNamespace]
	if ns == "" {
		ns = j.Namespace
	}
	if (revKey{ns, j.Meta[revmeta.KeyRevision]}) != k {
		return nil
	}
	r, fresh := t.adopt(j)
	if r == nil {
		return nil
	}
	if fresh {
		r.unlisted, r.learnedGen = true, t.gen
		if f, ok := t.stored[k]; ok {
			adoptFailure(r, f) // a previous leader's record, before the first listing took it
		}
	}
	t.setCount(r, count, j.JobModifyIndex)
	return r
}

// lookup is one activation-path read of a revision from Nomad (Scaler.know): one at a time
// per revision, and a miss is not read again before lookupRetry passed.
type lookup struct {
	done  chan struct{} // closed when the read ended
	ended time.Time     // zero while it runs
}

// lookupRetry is how long a revision Nomad did not give is not asked for again.
const lookupRetry = time.Second

// pruneLookups forgets the lookups that ended lookupRetry ago or more.
func (t *table) pruneLookups(now time.Time) {
	for k, l := range t.lookups {
		if !l.ended.IsZero() && now.Sub(l.ended) >= lookupRetry {
			delete(t.lookups, k)
		}
	}
}

// setCount records a count read from Nomad at a JobModifyIndex. A pending intent of ours
// survives; otherwise the table adopts Nomad's count. A read no newer than what the table
// knows (a Scale answered meanwhile) is stale and changes nothing.
func (t *table) setCount(r *revision, count int, index uint64) {
	if r.countIndex != 0 && index <= r.countIndex {
		return
	}
	if r.want == r.nomad || r.countIndex == 0 {
		r.want = count
	}
	if r.countIndex != 0 && count > r.nomad {
		r.wakeIndex = index // raised from outside: its allocations are created after index
	}
	r.nomad, r.countIndex = count, index
}

// observe sums the gateways' reports into per-revision samples. It reports whether there
// is any data at all and whether it is partial (a gateway did not answer, or a gateway is
// new so its request rate is not known yet).
func (t *table) observe(reports []gauges.Report, failed int) (data, partial, rpsPartial bool) {
	for _, r := range t.byJob {
		r.conc, r.rps, r.held, r.gwReady = 0, 0, 0, 0
	}
	for _, rep := range reports {
		gw := t.gws[rep.Gateway]
		fresh := gw == nil
		if fresh {
			gw = &gatewayCounters{totals: map[revKey]uint64{}}
			t.gws[rep.Gateway] = gw
			rpsPartial = true
		}
		dt := rep.At.Sub(gw.at).Seconds()
		for i := range rep.Revisions {
			v := &rep.Revisions[i]
			k := revKey{v.Namespace, v.Revision}
			prev, had := gw.totals[k]
			gw.totals[k] = v.RequestsTotal
			r := t.byRev[k]
			if r == nil {
				continue
			}
			r.conc += float64(v.Concurrency())
			r.held += v.Held
			r.gwReady += v.Ready
			switch {
			case fresh || dt <= 0:
			case !had || v.RequestsTotal < prev:
				// A revision new to this gateway, or a gateway that restarted: its
				// counter started from zero within the interval.
				r.rps += float64(v.RequestsTotal) / dt
			default:
				r.rps += float64(v.RequestsTotal-prev) / dt
			}
		}
		gw.at = rep.At
		gw.seen = t.gen
	}
	for id, gw := range t.gws {
		if t.gen-gw.seen > 30 { // gone for a minute: a comeback is a fresh start
			delete(t.gws, id)
		}
	}
	return len(reports) > 0, failed > 0, rpsPartial || failed > 0
}

// decide records this tick's samples and returns the revisions whose count changes.
// Revisions whose Nomad count is unknown are left alone.
func (t *table) decide(now time.Time, data, partial, rpsPartial bool, counts *[kpa.NumReasons]int) (changed []*revision) {
	for _, r := range t.byJob {
		if r.countIndex == 0 {
			continue
		}
		if data {
			p := partial
			if r.kpa.Config().Metric == revmeta.MetricRPS {
				p = rpsPartial
			}
			r.kpa.Record(now, kpa.Sample{Concurrency: r.conc, RPS: r.rps, Held: r.held, Partial: p})
		}
		d := r.kpa.Decide(now, r.ready, r.want)
		if r.failure != nil {
			switch {
			case now.Before(r.failedUntil):
				d.Desired, d.Reason = 0, kpa.Failed
			case r.want == 0 && r.held == 0 && d.Desired > 0 && r.kpa.Config().Min == 0:
				// Past its backoff only a request wakes it, not what the windows remember
				// of the requests answered 503 meanwhile.
				d.Desired, d.Reason = 0, kpa.Failed
			}
		}
		r.last = d
		counts[d.Reason]++
		if d.Desired != r.want {
			r.want = d.Desired
			changed = append(changed, r)
		} else if r.want != r.nomad {
			changed = append(changed, r) // an earlier intent not applied yet
		}
	}
	return changed
}

// activate is the activation path: held requests for a revision with no ready instance. It
// returns the revision when its count must rise now.
func (t *table) activate(now time.Time, a gauges.Activation) (*revision, int, bool) {
	r := t.byRev[revKey{a.Namespace, a.Revision}]
	if r == nil || r.countIndex == 0 {
		return nil, 0, false
	}
	need := r.kpa.Activate(now, a.Held)
	if r.want >= need {
		return r, need, false
	}
	from := r.want
	r.want = need
	return r, from, true
}

// status is one revision's line in the metrics and /decisions.
type status struct {
	key             revKey
	job             string
	ready, desired  int
	panic           bool
	stable, panicV  float64
	ebc             float64
	reason          kpa.Reason
	target, utilPct float64
}

func (t *table) snapshot() []status {
	out := make([]status, 0, len(t.byJob))
	for _, r := range t.byJob {
		c := r.kpa.Config()
		out = append(out, status{key: r.key, job: r.job.id, ready: r.ready, desired: r.want,
			panic: r.last.Panic, stable: r.last.Stable, panicV: r.last.PanicValue,
			ebc: r.last.ExcessBurstCapacity, reason: r.last.Reason, target: c.Target, utilPct: c.TargetUtilization * 100})
	}
	return out
}
