package control

import (
	"os"
	"testing"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
)

// cluster is the package's real Consul + Nomad (with the docker driver) for the tests
// that apply images (image_agent_test.go); the pure tests ignore it.
var cluster *testcluster.Cluster

// hostVolumeDir is the directory of the client's host volume "rouse-test-data"
// (volumes_agent_test.go).
var hostVolumeDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rouse-control-volume-")
	if err != nil {
		panic(err)
	}
	hostVolumeDir = dir
	code := testcluster.Run(m, testcluster.Options{Docker: true,
		HostVolumes: map[string]agents.HostVolume{"rouse-test-data": {Path: dir}}}, &cluster)
	os.RemoveAll(dir)
	os.Exit(code)
}
