package pingpb

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestDescriptorMatchesServiceDesc: the registered descriptor (what reflection serves)
// and ServiceDesc (what grpc-go serves) describe the same methods and stream kinds.
func TestDescriptorMatchesServiceDesc(t *testing.T) {
	sd := File.Services().ByName("PingService")
	if sd == nil || string(sd.FullName()) != ServiceName {
		t.Fatalf("service %v, want %s", sd, ServiceName)
	}
	want := map[string][2]bool{} // name → client streams, server streams
	for _, m := range ServiceDesc.Methods {
		want[m.MethodName] = [2]bool{}
	}
	for _, s := range ServiceDesc.Streams {
		want[s.StreamName] = [2]bool{s.ClientStreams, s.ServerStreams}
	}
	if sd.Methods().Len() != len(want) {
		t.Fatalf("descriptor has %d methods, ServiceDesc %d", sd.Methods().Len(), len(want))
	}
	for i := range sd.Methods().Len() {
		m := sd.Methods().Get(i)
		w, ok := want[string(m.Name())]
		if !ok {
			t.Errorf("%s: not in ServiceDesc", m.Name())
			continue
		}
		if got := [2]bool{m.IsStreamingClient(), m.IsStreamingServer()}; got != w {
			t.Errorf("%s: streams (client, server) %v in descriptor, %v in ServiceDesc", m.Name(), got, w)
		}
		if m.Output().FullName() != protoreflect.FullName("google.protobuf.StringValue") {
			t.Errorf("%s: output %s", m.Name(), m.Output().FullName())
		}
	}
	for name, full := range map[string]string{
		"Ping": MethodPing, "PingStream": MethodPingStream, "PingCollect": MethodPingCollect,
		"PingChat": MethodPingChat, "Stats": MethodStats,
	} {
		if full != "/"+ServiceName+"/"+name {
			t.Errorf("%s: constant %q", name, full)
		}
	}
}
