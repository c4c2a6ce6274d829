package agents

import (
	"net"
	"strings"
	"testing"
)

func TestFindBinariesMissingSaysMakeTools(t *testing.T) {
	t.Setenv("ROUSE_BIN_DIR", t.TempDir())
	t.Setenv("PATH", t.TempDir())
	t.Chdir(t.TempDir()) // outside the module: its bin/ is not searched
	_, err := FindBinaries()
	if err == nil || !strings.Contains(err.Error(), "make tools") || !strings.Contains(err.Error(), "nomad") {
		t.Fatalf("want an error naming nomad and `make tools`, got %v", err)
	}
}

func TestCheckPortFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := CheckPortFree(l.Addr().String()); err == nil || !strings.Contains(err.Error(), "not free") {
		t.Fatalf("busy port: %v", err)
	}
}
