package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	consulapi "github.com/hashicorp/consul/api"
)

// failuresPrefix holds one record per revision whose instances failed to start: the
// scaler (which sees Nomad) writes it, every gateway (which sees only Consul) reads it
// with the same blocking query as the routes, and answers that revision's requests 503
// with the reason until RetryAt. Not under revisions/: those keys are revision configs.
const failuresPrefix = Prefix + "failures/"

// MaxFailureReason bounds Failure.Reason in bytes: it is a line of an app's stderr, shown
// to clients of the public URL, never a log.
const MaxFailureReason = 200

// FailureKey is the KV key of a revision's failure record.
func FailureKey(ns, rev string) string { return failuresPrefix + ns + "/" + rev }

// Failure says that every instance of a revision failed to start (Nomad's restart policy
// gave up on each and none runs), why, and until when nothing starts it again.
type Failure struct {
	Namespace string `json:"namespace"`
	Revision  string `json:"revision"`
	// SpecHash is the revision's template hash: a revision deleted and applied again under
	// the same name with another spec is not the one that failed.
	SpecHash string `json:"spec_hash,omitempty"`
	// Reason is one line: the first line of the task's stderr with its exit code, or
	// Nomad's task event. At most MaxFailureReason bytes (see CleanReason).
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// RetryAt is when the backoff ends: until then requests are answered 503 at once and
	// the scaler keeps the revision at zero; afterwards a request wakes it again.
	RetryAt time.Time `json:"retry_at"`
	// RetryAfter is RetryAt − At in whole seconds: a gateway whose clock is off never
	// refuses for longer than this from when it read the record.
	RetryAfter int `json:"retry_after"`
	// Attempt counts the failures in a row (1 for the first): the backoff doubles with it.
	Attempt int `json:"attempt"`
	// JobCreateIndex is the CreateIndex of the Nomad job that failed, so a new scaler
	// leader can tell a record of a job since purged and registered again.
	JobCreateIndex uint64 `json:"job_create_index,omitempty"`
}

// CleanReason makes one line of at most MaxFailureReason bytes of s: valid UTF-8,
// control characters as spaces, surrounding space trimmed, cut at a rune boundary with
// "…" when longer.
func CleanReason(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= MaxFailureReason {
		return s
	}
	const ellipsis = "…"
	cut := MaxFailureReason - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.TrimSpace(s[:cut]) + ellipsis
}

// PutFailure writes a revision's failure record.
func (s *Store) PutFailure(ctx context.Context, f Failure) error {
	f.Reason = CleanReason(f.Reason)
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return s.write(ctx, FailureKey(f.Namespace, f.Revision), &consulapi.KVTxnOp{Verb: consulapi.KVSet, Value: b}, OpPut)
}

// DeleteFailure removes a revision's failure record (absent is fine).
func (s *Store) DeleteFailure(ctx context.Context, ns, rev string) error {
	return s.write(ctx, FailureKey(ns, rev), &consulapi.KVTxnOp{Verb: consulapi.KVDelete}, OpDelete)
}

// ListFailures returns every failure record; one that does not decode is skipped.
func (s *Store) ListFailures(ctx context.Context) ([]Failure, error) {
	pairs, _, err := s.kv.List(failuresPrefix, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list %s from consul: %w", failuresPrefix, err)
	}
	out := make([]Failure, 0, len(pairs))
	for _, p := range pairs {
		if f, err := decodeFailure(p); err == nil {
			out = append(out, f)
		}
	}
	return out, nil
}

func decodeFailure(p *consulapi.KVPair) (Failure, error) {
	var f Failure
	if err := json.Unmarshal(p.Value, &f); err != nil {
		return Failure{}, fmt.Errorf("consul key %s: %w", p.Key, err)
	}
	if f.Namespace == "" || f.Revision == "" {
		return Failure{}, fmt.Errorf("consul key %s: failure record without namespace or revision", p.Key)
	}
	f.Reason = CleanReason(f.Reason) // whoever wrote it, a client never gets more than a line
	return f, nil
}
