package jobspec

import (
	"strings"
	"testing"

	"github.com/rouse-run/rouse/internal/revmeta"
)

var (
	digestA = "sha256:" + strings.Repeat("a", 64)
	digestB = "sha256:" + strings.Repeat("b", 64)
)

func TestPinImage(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"127.0.0.1:5000/hi:1", "127.0.0.1:5000/hi@" + digestA},
		{"localhost:5000/hi", "localhost:5000/hi@" + digestA}, // the ':' is the port's: no tag
		{"redis", "redis@" + digestA},
		{"redis:7.2-alpine", "redis@" + digestA},
		{"ghcr.io/acme/shop:1.2", "ghcr.io/acme/shop@" + digestA},
		{"ghcr.io/acme/shop@" + digestB, "ghcr.io/acme/shop@" + digestB}, // already pinned: as is
		{"ghcr.io/acme/shop:1.2@" + digestB, "ghcr.io/acme/shop:1.2@" + digestB},
	} {
		got, err := PinImage(tc.image, digestA)
		if err != nil || got != tc.want {
			t.Errorf("PinImage(%q) = %q, %v; want %q", tc.image, got, err, tc.want)
		}
	}
	if _, err := PinImage("x:1", "sha256:short"); err == nil {
		t.Error("a malformed digest was accepted")
	}
}

func TestImageDigestOf(t *testing.T) {
	for image, want := range map[string]string{
		"x:1":                          "",
		"ghcr.io/a/b@" + digestB:       digestB,
		"ghcr.io/a/b:1.2@" + digestB:   digestB,
		"not a reference":              "",
		"127.0.0.1:5000/hi:${NOMAD_X}": "",
	} {
		if got := ImageDigestOf(image); got != want {
			t.Errorf("ImageDigestOf(%q) = %q, want %q", image, got, want)
		}
	}
}

// TestImageSyntax: an image that docker could not read is a spec error at its source;
// one given by digest is checked too (algorithm and length), and one holding a Nomad
// runtime reference is left to Nomad.
func TestImageSyntax(t *testing.T) {
	for _, tc := range []struct{ image, err string }{
		{"Hello:1", "not an image reference"},
		{"x:1@sha256:abc", "not an image reference"},
		{"x@md5:" + strings.Repeat("a", 32), "not an image reference"},
		{"x:bad tag", "not an image reference"},
		{"ghcr.io/a/b@" + digestA, ""},
		{"registry.local:5000/team/app:v1.2.3", ""},
		{"${NOMAD_META_image}", ""},
	} {
		src := "service \"a\" {\n  image = \"" + strings.ReplaceAll(tc.image, "${", "$${") + "\"\n}\n"
		if strings.Contains(tc.image, "${NOMAD") {
			src = "service \"a\" {\n  image = \"" + tc.image + "\"\n}\n"
		}
		_, diags := parseOne(src, nil, nil)
		got := diagText(nil, diags)
		switch {
		case tc.err == "" && diags.HasErrors():
			t.Errorf("%q rejected: %s", tc.image, got)
		case tc.err != "" && !strings.Contains(got, tc.err):
			t.Errorf("%q: want an error with %q, got %q", tc.image, tc.err, got)
		case tc.err != "" && !strings.Contains(got, "Invalid image"):
			t.Errorf("%q: %q", tc.image, got)
		}
	}
}

func TestResolveImageAttribute(t *testing.T) {
	s := mustParse(t, "service \"a\" {\n  image = \"x:1\"\n}\n", nil, nil)
	if !s.ResolveImage {
		t.Error("resolve_image must default to true for an image")
	}
	s = mustParse(t, "service \"a\" {\n  image = \"x:1\"\n  resolve_image = false\n}\n", nil, nil)
	if s.ResolveImage {
		t.Error("resolve_image = false ignored")
	}
	if s := mustParse(t, "service \"a\" {\n  command = \"/x\"\n}\n", nil, nil); s.ResolveImage {
		t.Error("a command has nothing to resolve")
	}
	_, diags := parseOne("service \"a\" {\n  command = \"/x\"\n  resolve_image = true\n}\n", nil, nil)
	if got := diagText(nil, diags); !strings.Contains(got, "Unexpected resolve_image") {
		t.Errorf("resolve_image with a command: %q", got)
	}
	// resolve_image is not part of the template: what changes the template is the digest
	// it leads to (none when off).
	on := mustParse(t, hashBase, nil, nil)
	off := mustParse(t, strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  resolve_image = false", 1), nil, nil)
	if on.TemplateHash() != off.TemplateHash() {
		t.Error("resolve_image changed the hash by itself")
	}
}

// TestTemplateHashIncludesDigest: the same tag on other content is another revision;
// on the same content it is the same one.
func TestTemplateHashIncludesDigest(t *testing.T) {
	tag := mustParse(t, hashBase, nil, nil)
	a1, a2, b := *tag, *tag, *tag
	a1.ImageDigest, a2.ImageDigest, b.ImageDigest = digestA, digestA, digestB
	switch {
	case a1.TemplateHash() != a2.TemplateHash():
		t.Error("same digest, different hash")
	case a1.TemplateHash() == b.TemplateHash():
		t.Error("another digest behind the same tag gave the same hash")
	case a1.TemplateHash() == tag.TemplateHash():
		t.Error("a resolved digest did not change the hash of the unresolved tag")
	}
	if tag.TemplateHash() != "57ee4caae3d10edf83970ec69c93ba9d" {
		t.Error("an unresolved spec's hash moved: revisions of resolve_image = false services would roll")
	}
}

// TestCompilePinnedImage: the job runs the digest; the meta keeps the tag and the digest.
func TestCompilePinnedImage(t *testing.T) {
	s := mustParse(t, "service \"hi\" {\n  image = \"127.0.0.1:5000/hi:1\"\n}\n", nil, nil)
	s.ImageDigest = digestA
	job, cfg, err := Compile(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := job.TaskGroups[0].Tasks[0].Config["image"]; got != "127.0.0.1:5000/hi@"+digestA {
		t.Errorf("task image %v", got)
	}
	if job.Meta[revmeta.KeyImage] != "127.0.0.1:5000/hi:1" || job.Meta[revmeta.KeyImageDigest] != digestA ||
		cfg.Image != "127.0.0.1:5000/hi:1" || cfg.ImageDigest != digestA {
		t.Errorf("meta %v cfg %+v", job.Meta, cfg)
	}

	// Not resolved: the tag as written, and no digest in meta.
	s.ImageDigest = ""
	job, _, err = Compile(s, 1)
	if err != nil || job.TaskGroups[0].Tasks[0].Config["image"] != "127.0.0.1:5000/hi:1" {
		t.Fatalf("%v %v", job.TaskGroups[0].Tasks[0].Config, err)
	}
	if _, ok := job.Meta[revmeta.KeyImageDigest]; ok {
		t.Errorf("a tag that follows its image has a digest in meta: %v", job.Meta)
	}

	// Given by digest: as written, and the digest in meta.
	s = mustParse(t, "service \"hi\" {\n  image = \"127.0.0.1:5000/hi@"+digestB+"\"\n}\n", nil, nil)
	job, _, err = Compile(s, 1)
	if err != nil || job.TaskGroups[0].Tasks[0].Config["image"] != "127.0.0.1:5000/hi@"+digestB || job.Meta[revmeta.KeyImageDigest] != digestB {
		t.Fatalf("%v %v %v", job.TaskGroups[0].Tasks[0].Config, job.Meta, err)
	}

	// A hand-built digest that cannot pin fails to compile.
	s.Image, s.ImageDigest = "x:1", "sha256:nope"
	if _, _, err := Compile(s, 1); err == nil {
		t.Error("a malformed digest compiled")
	}
}

// TestCompileInitialZero: initial = 0 with min = 0 registers the revision at count 0.
func TestCompileInitialZero(t *testing.T) {
	s := mustParse(t, "service \"z\" {\n  image = \"x:1\"\n  autoscaling {\n    initial = 0\n  }\n}\n", nil, nil)
	job, _, err := Compile(s, 1)
	if err != nil || *job.TaskGroups[0].Count != 0 || InitialCount(s) != 0 {
		t.Fatalf("count %d %v", *job.TaskGroups[0].Count, err)
	}
	s.Autoscaling.Min = 2
	if InitialCount(s) != 2 {
		t.Fatal("min still floors the initial count")
	}
}
