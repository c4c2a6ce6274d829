package pingpb

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// protoFile is the name of the .proto that the package comment shows.
const protoFile = "rouse/examples/ping/v1/ping.proto"

// File is the descriptor of that .proto, built here rather than by protoc and registered
// in protoregistry.GlobalFiles, where grpc's reflection service looks services up: with it
// `grpcurl describe` and calls without a local .proto work.
var File protoreflect.FileDescriptor

func init() {
	stringValue := "." + string((&wrapperspb.StringValue{}).ProtoReflect().Descriptor().FullName())
	empty := "." + string((&emptypb.Empty{}).ProtoReflect().Descriptor().FullName())
	method := func(name, in string, clientStreams, serverStreams bool) *descriptorpb.MethodDescriptorProto {
		m := &descriptorpb.MethodDescriptorProto{
			Name:       proto.String(name),
			InputType:  proto.String(in),
			OutputType: proto.String(stringValue),
		}
		if clientStreams {
			m.ClientStreaming = proto.Bool(true)
		}
		if serverStreams {
			m.ServerStreaming = proto.Bool(true)
		}
		return m
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String(protoFile),
		Package: proto.String("rouse.examples.ping.v1"),
		Dependency: []string{
			emptypb.File_google_protobuf_empty_proto.Path(),
			wrapperspb.File_google_protobuf_wrappers_proto.Path(),
		},
		Syntax: proto.String("proto3"),
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("PingService"),
			Method: []*descriptorpb.MethodDescriptorProto{
				method("Ping", stringValue, false, false),
				method("PingStream", stringValue, false, true),
				method("PingCollect", stringValue, true, false),
				method("PingChat", stringValue, true, true),
				method("Stats", empty, false, false),
			},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err == nil {
		err = protoregistry.GlobalFiles.RegisterFile(fd)
	}
	if err != nil {
		panic(fmt.Sprintf("pingpb: %s: %v", protoFile, err))
	}
	File = fd
}
