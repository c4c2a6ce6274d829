package control

import (
	"os"
	"testing"

	"github.com/rouse-run/rouse/internal/harness/testcluster"
)

// cluster is the package's real Consul + Nomad (with the docker driver) for the tests
// that apply images (image_agent_test.go); the pure tests ignore it.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(testcluster.Run(m, testcluster.Options{Docker: true}, &cluster)) }
