package gauges

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	in := Report{Gateway: "gw-1", At: time.UnixMilli(1700000000123), Revisions: []Revision{
		{Namespace: "default", Revision: "hello-00001", InFlight: 3, Queued: 1, Held: 0, RequestsTotal: 12345, Ready: 2},
		{Namespace: "prod", Revision: "api-00007", Held: 9},
	}}
	var b bytes.Buffer
	if err := Write(&b, in); err != nil {
		t.Fatal(err)
	}
	out, err := Read(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %+v want %+v", out, in)
	}
	if out.Revisions[0].Concurrency() != 4 {
		t.Fatal("concurrency")
	}
}

func TestReadErrorsNameLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"nope\n", "line 1"},
		{"rouse-gauges 1 g 5\ndefault/a 1 2 3\n", "line 2: want 6 fields"},
		{"rouse-gauges 1 g 5\nnoslash 1 2 3 4 5\n", "line 2"},
		{"rouse-gauges 1 g 5\nd/a 1 2 x 4 5\n", "line 2"},
	} {
		_, err := Read(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Read(%q) = %v, want error containing %q", c.in, err, c.want)
		}
	}
}

func TestActivationsRoundTrip(t *testing.T) {
	var b bytes.Buffer
	in := []Activation{{"default", "hello-00001", 5}}
	if err := WriteActivations(&b, 42, in); err != nil {
		t.Fatal(err)
	}
	seq, out, err := ReadActivations(&b)
	if err != nil || seq != 42 || !reflect.DeepEqual(in, out) {
		t.Fatalf("got %d %+v %v", seq, out, err)
	}
	if _, _, err := ReadActivations(strings.NewReader("rouse-activations 1 1\nbad\n")); err == nil {
		t.Fatal("bad line accepted")
	}
}
