// Package dns stands in, for rouse's build of Traefik only, for lego's DNS-provider table
// (github.com/go-acme/lego/v5 providers/dns/zz_gen_dns_providers.go): the table imports
// every DNS provider, and the SDKs of a dozen of them (huaweicloud, ucloud, oci, ...) are not
// served by this machine's Go module proxy. tools/traefik/overlay swaps this file in with
// `go build -overlay`; the built Traefik has no ACME DNS-01 challenge, which a benchmark
// peer does not use.
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName refuses every name: no DNS provider is built.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("unrecognized DNS provider: %s (this Traefik is built without DNS-01 providers)", name)
}
