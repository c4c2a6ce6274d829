package certs

import (
	"fmt"
	"sort"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
)

// Shared is a source of pairs that every gateway of a fleet reads, so a certificate is
// put once and served by all of them. It is read at each poll, like the files.
type Shared interface {
	// Pairs returns every pair, sorted by name. An error keeps the set being served.
	Pairs() ([]SharedPair, error)
	// String names the source in errors and logs ("consul kv rouse-certs/").
	String() string
}

// SharedPair is one pair of a Shared source.
type SharedPair struct {
	Name            string // where it is, for logs and errors ("consul kv rouse-certs/example")
	CertPEM, KeyPEM []byte
}

// ConsulKV reads pairs from Consul KV: <prefix><name>/tls.crt and <prefix><name>/tls.key,
// the Dir convention of one folder per pair (a Kubernetes TLS Secret's keys). The
// prefix is not under rouse/, which every gateway lists on each route change: the
// certificates would travel with every route change, and the private keys would need
// the same ACL as the routes. A gateway needs key:read on the prefix.
func ConsulKV(c *consulapi.Client, prefix string) Shared {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &consulKV{kv: c.KV(), prefix: prefix}
}

type consulKV struct {
	kv     *consulapi.KV
	prefix string
}

func (c *consulKV) String() string { return "consul kv " + c.prefix }

func (c *consulKV) Pairs() ([]SharedPair, error) {
	kvs, _, err := c.kv.List(c.prefix, &consulapi.QueryOptions{RequireConsistent: false})
	if err != nil {
		return nil, err
	}
	type half struct{ cert, key []byte }
	byName := map[string]*half{}
	for _, p := range kvs {
		rest := strings.TrimPrefix(p.Key, c.prefix)
		name, file, ok := strings.Cut(rest, "/")
		if !ok || name == "" || strings.HasPrefix(name, ".") || (file != subdirCert && file != subdirKey) {
			continue // not a pair's key: other keys may live beside them
		}
		h := byName[name]
		if h == nil {
			h = &half{}
			byName[name] = h
		}
		if file == subdirCert {
			h.cert = p.Value
		} else {
			h.key = p.Value
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]SharedPair, 0, len(names))
	for _, n := range names {
		h := byName[n]
		where := "consul kv " + c.prefix + n
		if h.cert == nil || h.key == nil {
			return nil, fmt.Errorf("%s: has only one of %s and %s (a put in progress?)", where, subdirCert, subdirKey)
		}
		out = append(out, SharedPair{Name: where, CertPEM: h.cert, KeyPEM: h.key})
	}
	return out, nil
}
