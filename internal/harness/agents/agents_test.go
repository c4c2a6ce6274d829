package agents

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rouse-run/rouse/internal/revmeta"
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

func TestClientBlockRendersMeta(t *testing.T) {
	for _, role := range []Role{RoleDev, RoleClient} {
		o := NomadOptions{Role: role, Servers: []string{"127.0.0.1:4647"},
			Meta: map[string]string{revmeta.GuardBinMeta: "/opt/rouse/bin/rouse", "az": "a \"b\""}}
		got := clientBlock(o, "")
		want := "  meta {\n    \"az\" = \"a \\\"b\\\"\"\n    \"rouse_bin\" = \"/opt/rouse/bin/rouse\"\n  }\n"
		if !strings.Contains(got, want) {
			t.Errorf("role %d: client block lacks the meta block %q:\n%s", role, want, got)
		}
		if i, j := strings.Index(got, "client {"), strings.Index(got, "meta {"); i < 0 || j < i || j > strings.Index(got, "\n}\n") {
			t.Errorf("role %d: meta is not inside the client stanza:\n%s", role, got)
		}
	}
	if got := clientBlock(NomadOptions{}, ""); strings.Contains(got, "meta") {
		t.Errorf("no Meta, yet a meta block:\n%s", got)
	}
}

// TestClientConfigValidates has Nomad itself read a client stanza with meta (skipped
// without a nomad binary).
func TestClientConfigValidates(t *testing.T) {
	bins, err := FindBinaries()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	o := NomadOptions{Role: RoleClient, Servers: []string{"127.0.0.1:4647"}, Meta: map[string]string{revmeta.GuardBinMeta: "/usr/local/bin/rouse"}}
	cfg := "data_dir = \"" + dir + "\"\n" + clientBlock(o, "")
	f := filepath.Join(dir, "nomad.hcl")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(bins.Nomad, "config", "validate", f).CombinedOutput(); err != nil {
		t.Fatalf("nomad config validate: %v\n%s\n%s", err, b, cfg)
	}
}

func TestWithRouseBinDefaultsClientsMeta(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "rouse")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ROUSE_BIN", bin)
	for _, role := range []Role{RoleDev, RoleClient} {
		mine := map[string]string{"az": "a"}
		o, err := withRouseBin(NomadOptions{Role: role, Meta: mine})
		if err != nil {
			t.Fatal(err)
		}
		if o.Meta[revmeta.GuardBinMeta] != bin || o.Meta["az"] != "a" {
			t.Errorf("role %d: meta %v, want rouse_bin=%s and az kept", role, o.Meta, bin)
		}
		if _, ok := mine[revmeta.GuardBinMeta]; ok {
			t.Errorf("role %d: the caller's map was changed", role)
		}
	}
	o, err := withRouseBin(NomadOptions{Role: RoleClient, Meta: map[string]string{revmeta.GuardBinMeta: "/given"}})
	if err != nil || o.Meta[revmeta.GuardBinMeta] != "/given" {
		t.Errorf("a given rouse_bin must stay: %v, %v", o.Meta, err)
	}
	o, err = withRouseBin(NomadOptions{Role: RoleServer})
	if err != nil || o.Meta != nil {
		t.Errorf("a server has no client meta: %v, %v", o.Meta, err)
	}
	t.Setenv("ROUSE_BIN", "relative/rouse")
	if _, err := withRouseBin(NomadOptions{Role: RoleDev}); err == nil || !strings.Contains(err.Error(), "ROUSE_BIN") {
		t.Errorf("a bad ROUSE_BIN must fail the client's start, naming it: %v", err)
	}
}

func TestRouseBinaryChecksROUSE_BIN(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ val, why string }{
		{plain, "not executable"},
		{"bin/rouse", "not an absolute path"},
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "not a regular file"},
	} {
		t.Setenv("ROUSE_BIN", c.val)
		_, err := RouseBinary(dir)
		if err == nil || !strings.Contains(err.Error(), "ROUSE_BIN="+c.val) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("ROUSE_BIN=%s: want an error naming it and %q, got %v", c.val, c.why, err)
		}
	}
	exe := filepath.Join(dir, "rouse")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ROUSE_BIN", exe)
	if got, err := RouseBinary(dir); err != nil || got != exe {
		t.Errorf("ROUSE_BIN=%s: got %q, %v", exe, got, err)
	}
}

// TestRouseBinaryBuilds builds ./cmd/rouse without ROUSE_BIN, into the directory given:
// a binary that has the guard command.
func TestRouseBinaryBuilds(t *testing.T) {
	t.Setenv("ROUSE_BIN", "")
	dir := t.TempDir()
	a, err := RouseBinary(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "rouse"); a != want {
		t.Errorf("built into %s, want %s", a, want)
	}
	if out, err := exec.Command(a, "guard", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--concurrency") {
		t.Errorf("%s guard --help: %v\n%s", a, err, out)
	}
}
