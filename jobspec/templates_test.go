package jobspec

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// TestBadTemplatesAndVolumes asserts every error a bad template or volume block produces:
// summary and position, all at once (TestBadSpecs' style).
func TestBadTemplatesAndVolumes(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []want
	}{
		{
			name: "template destination escapes, is absolute, or is outside the task folders",
			src: `service "a" {
  command = "x"
  template {
    destination = "local/../../etc/passwd"
    data        = "x"
  }
  template {
    destination = "/etc/app.conf"
    data        = "x"
  }
  template {
    destination = "app.conf"
    data        = "x"
  }
  template {
    destination = "local"
    data        = "x"
  }
}
`,
			want: []want{
				{"Invalid template.destination", "4:19"},
				{"Invalid template.destination", "8:19"},
				{"Invalid template.destination", "12:19"},
				{"Invalid template.destination", "16:19"},
			},
		},
		{
			name: "duplicate template destinations, after cleaning",
			src: `service "a" {
  command = "x"
  template {
    destination = "local/app.env"
    data        = "x"
  }
  template {
    destination = "local/./app.env"
    data        = "y"
  }
}
`,
			want: []want{{"Duplicate template destination", "8:19"}},
		},
		{
			name: "missing destination and data",
			src: `service "a" {
  command = "x"
  template {
    env = true
  }
}
`,
			want: []want{{"Missing template destination", "3:3"}, {"Missing template data", "3:3"}},
		},
		{
			name: "change_mode unknown, change_signal without signal, signal without change_signal, unknown signal",
			src: `service "a" {
  command = "x"
  template {
    destination = "local/a"
    data        = "x"
    change_mode = "script"
  }
  template {
    destination   = "local/b"
    data          = "x"
    change_signal = "SIGHUP"
  }
  template {
    destination = "local/c"
    data        = "x"
    change_mode = "signal"
  }
  template {
    destination   = "local/d"
    data          = "x"
    change_mode   = "signal"
    change_signal = "HUP"
  }
}
`,
			want: []want{
				{"Invalid template.change_mode", "6:19"},
				{"Invalid template.change_signal", "11:21"},
				{"Missing template change_signal", "16:19"},
				{"Invalid template.change_signal", "22:21"},
			},
		},
		{
			name: "variables outside the service's prefix, in another namespace, computed, or unclean",
			src: `service "shop" {
  command = "x"
  template {
    destination = "secrets/a"
    data        = "{{ with nomadVar \"nomad/jobs/billing/db\" }}{{ .p }}{{ end }}"
  }
  template {
    destination = "secrets/b"
    data        = "{{ with nomadVar \"nomad/jobs/shop/db@other\" }}{{ .p }}{{ end }}"
  }
  template {
    destination = "secrets/c"
    data        = "{{ with nomadVar (printf \"nomad/jobs/shop/%s\" \"db\") }}{{ .p }}{{ end }}"
  }
  template {
    destination = "secrets/d"
    data        = "{{ range nomadVarList \"nomad/jobs/shop//x\" }}{{ end }}"
  }
  template {
    destination = "secrets/e"
    data        = "{{ with nomadVar \"nomad/jobs/shopping\" }}{{ .p }}{{ end }}"
  }
}
`,
			want: []want{
				{"Invalid template.data", "5:19"},
				{"Invalid template.data", "9:19"},
				{"Invalid template.data", "13:19"},
				{"Invalid template.data", "17:19"},
				{"Invalid template.data", "21:19"},
			},
		},
		{
			name: "duplicate volume names and destinations, bad name",
			src: `service "a" {
  image = "x"
  volume "data" {
    type        = "host"
    source      = "d"
    destination = "/data"
  }
  volume "data" {
    type        = "host"
    source      = "e"
    destination = "/data/"
  }
  volume "no/slash" {
    type        = "scratch"
    destination = "/tmp/x"
  }
}
`,
			want: []want{
				{"Duplicate volume", "8:10"},
				{"Duplicate volume destination", "11:19"},
				{"Invalid volume name", "13:10"},
			},
		},
		{
			name: "source missing, unknown type, read_only on scratch, source on scratch, csi modes",
			src: `service "a" {
  image = "x"
  volume "h" {
    type        = "host"
    destination = "/h"
  }
  volume "c" {
    type        = "csi"
    destination = "/c"
  }
  volume "n" {
    type        = "nfs"
    source      = "x"
    destination = "/n"
  }
  volume "s" {
    type        = "scratch"
    source      = "x"
    destination = "/s"
    read_only   = true
  }
  volume "m" {
    type            = "csi"
    source          = "m"
    destination     = "/m"
    access_mode     = "single-node-reader-only"
    attachment_mode = "filesystem"
  }
  volume "hm" {
    type        = "host"
    source      = "hm"
    destination = "relative"
    access_mode = "single-node-writer"
  }
  volume "t" {
    destination = "/t"
  }
}
`,
			want: []want{
				{"Missing volume source", "3:3"},
				{"Missing volume source", "7:3"},
				{"Invalid volume.type", "12:19"},
				{"Unexpected volume source", "18:19"},
				{"Unexpected volume read_only", "20:19"},
				{"Invalid volume.access_mode", "26:23"},
				{"Invalid volume.attachment_mode", "27:23"},
				{"Invalid volume.destination", "32:19"},
				{"Unexpected volume access_mode", "33:19"},
				{"Missing volume type", "35:3"},
			},
		},
		{
			name: "raw_exec cannot mount; scratch needs an image",
			src: `service "a" {
  command = "x"
  volume "h" {
    type        = "host"
    source      = "h"
    destination = "/h"
  }
}
`,
			want: []want{{"Volume needs an isolating driver", "3:3"}},
		},
		{
			name: "scratch with exec",
			src: `service "a" {
  command = "x"
  driver  = "exec"
  volume "s" {
    type        = "scratch"
    destination = "/s"
  }
}
`,
			want: []want{{"Scratch volume needs an image", "4:3"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, diags := parseOne(c.src, nil, nil)
			got := diagWants(diags, hcl.DiagError)
			if !sameWants(got, c.want) {
				t.Errorf("diagnostics:\n got %v\nwant %v\n%s", got, c.want, diagText(nil, diags))
			}
			if s != nil {
				t.Errorf("spec returned along with errors")
			}
		})
	}
}

// TestTemplateDiagnosticText: the message names the variable, the allowed prefix and why.
func TestTemplateDiagnosticText(t *testing.T) {
	_, diags := parseOne(`service "shop" {
  command = "x"
  template {
    destination = "secrets/a"
    data        = "{{ with nomadVar \"nomad/jobs/shop-00001/db\" }}{{ .p }}{{ end }}"
  }
}
`, nil, nil)
	text := diagText(nil, diags)
	for _, w := range []string{`"nomad/jobs/shop-00001/db" is outside nomad/jobs/shop/`, "changes with every revision"} {
		if !strings.Contains(text, w) {
			t.Errorf("diagnostic lacks %q:\n%s", w, text)
		}
	}
}

// TestTemplateAndVolumeHash: templates and volumes are part of the revision template (the
// template text, not the variables' values, which rouse never sees), and a spec without
// them hashes as before they existed.
func TestTemplateAndVolumeHash(t *testing.T) {
	base := "service \"a\" {\n  image = \"x\"\n%s}\n"
	hash := func(body string) string {
		t.Helper()
		s, diags := parseOne(strings.Replace(base, "%s", body, 1), nil, nil)
		if diags.HasErrors() {
			t.Fatal(diagText(nil, diags))
		}
		return s.TemplateHash()
	}
	plain := hash("")
	tmpl := "  template {\n    destination = \"local/a\"\n    data = \"{{ with nomadVar \\\"nomad/jobs/a/%s\\\" }}{{ .v }}{{ end }}\"\n  }\n"
	one, two := hash(strings.Replace(tmpl, "%s", "one", 1)), hash(strings.Replace(tmpl, "%s", "two", 1))
	vol := "  volume \"v\" {\n    type = \"host\"\n    source = \"v\"\n    destination = \"/v\"\n%s  }\n"
	rw, ro := hash(strings.Replace(vol, "%s", "", 1)), hash(strings.Replace(vol, "%s", "    read_only = true\n", 1))
	all := map[string]string{"plain": plain, "template one": one, "template two": two, "volume rw": rw, "volume ro": ro}
	seen := map[string]string{}
	for k, h := range all {
		if prev, ok := seen[h]; ok {
			t.Errorf("%s and %s hash alike", prev, k)
		}
		seen[h] = k
	}
	// The zero values add nothing to the hashed JSON.
	s, _ := parseOne(strings.Replace(base, "%s", "", 1), nil, nil)
	s.Templates, s.Volumes = []Template{}, []Volume{}
	if s.TemplateHash() != plain {
		t.Error("empty Templates/Volumes changed the hash")
	}
}

// TestTemplateVariables lists the references apply checks.
func TestTemplateVariables(t *testing.T) {
	s, diags := parseOne(`service "shop" {
  command = "x"
  template {
    destination = "secrets/a"
    data        = <<-EOT
      {{ with nomadVar "nomad/jobs/shop/db" }}{{ .p }}{{ end }}
      {{ range nomadVarList `+"`nomad/jobs/shop/flags`"+` }}{{ .Path }}{{ end }}
      {{ if nomadVarExists "nomad/jobs/shop/opt" }}yes{{ end }}
    EOT
  }
  template {
    destination = "local/b"
    data        = "{{ with nomadVar \"nomad/jobs/shop\" }}{{ .p }}{{ end }}"
  }
}
`, nil, nil)
	if diags.HasErrors() {
		t.Fatal(diagText(nil, diags))
	}
	got := s.TemplateVariables()
	want := []VariableRef{
		{Path: "nomad/jobs/shop/db", Exact: true}, {Path: "nomad/jobs/shop/flags"}, {Path: "nomad/jobs/shop/opt"},
		{Path: "nomad/jobs/shop", Exact: true, Template: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ref %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestCompileChecksTemplatesAndVolumes: a hand-built Spec with what Parse refuses fails
// Compile loudly.
func TestCompileChecksTemplatesAndVolumes(t *testing.T) {
	for name, edit := range map[string]func(s *Spec){
		"template outside the task dir": func(s *Spec) {
			s.Templates = []Template{{Destination: "../x", Data: "x", ChangeMode: ChangeRestart}}
		},
		"signal without a signal": func(s *Spec) {
			s.Templates = []Template{{Destination: "local/x", Data: "x", ChangeMode: ChangeSignal}}
		},
		"volume without source": func(s *Spec) {
			s.Volumes = []Volume{{Name: "v", Type: VolumeHost, Destination: "/v"}}
		},
		"scratch read-only": func(s *Spec) {
			s.Volumes = []Volume{{Name: "v", Type: VolumeScratch, Destination: "/v", ReadOnly: true}}
		},
		"duplicate destination": func(s *Spec) {
			s.Volumes = []Volume{{Name: "a", Type: VolumeHost, Source: "a", Destination: "/v"}, {Name: "b", Type: VolumeHost, Source: "b", Destination: "/v/"}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, diags := parseOne("service \"a\" {\n  image = \"x\"\n}\n", nil, nil)
			if diags.HasErrors() {
				t.Fatal(diagText(nil, diags))
			}
			edit(s)
			if _, _, err := Compile(s, 1); err == nil {
				t.Error("compiled")
			}
		})
	}
}
