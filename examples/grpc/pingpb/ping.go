// Package pingpb is the gRPC service of examples/grpc, written by hand instead of by protoc.
// Its messages are protobuf's well-known google.protobuf.StringValue and
// google.protobuf.Empty, so on the wire it is ordinary gRPC: the service of this .proto,
// callable by any gRPC client that knows it (or asks the server's reflection, which finds
// the descriptor this package registers):
//
//	syntax = "proto3";
//	package rouse.examples.ping.v1;
//
//	import "google/protobuf/empty.proto";
//	import "google/protobuf/wrappers.proto";
//
//	service PingService {
//	  rpc Ping(google.protobuf.StringValue) returns (google.protobuf.StringValue);
//	  rpc PingStream(google.protobuf.StringValue) returns (stream google.protobuf.StringValue);
//	  rpc PingCollect(stream google.protobuf.StringValue) returns (google.protobuf.StringValue);
//	  rpc PingChat(stream google.protobuf.StringValue) returns (stream google.protobuf.StringValue);
//	  rpc Stats(google.protobuf.Empty) returns (google.protobuf.StringValue);
//	}
package pingpb

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the service's full protobuf name.
const ServiceName = "rouse.examples.ping.v1.PingService"

// The methods' full names, as in a request's :path (and grpc.UnaryServerInfo.FullMethod).
const (
	MethodPing        = "/" + ServiceName + "/Ping"
	MethodPingStream  = "/" + ServiceName + "/PingStream"
	MethodPingCollect = "/" + ServiceName + "/PingCollect"
	MethodPingChat    = "/" + ServiceName + "/PingChat"
	MethodStats       = "/" + ServiceName + "/Stats"
)

// The streams' types on each side: every message is a StringValue.
type (
	StreamServer  = grpc.ServerStreamingServer[wrapperspb.StringValue]
	CollectServer = grpc.ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]
	ChatServer    = grpc.BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]

	StreamClient  = grpc.ServerStreamingClient[wrapperspb.StringValue]
	CollectClient = grpc.ClientStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue]
	ChatClient    = grpc.BidiStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue]
)

// Server is what a PingService implementation provides.
type Server interface {
	// Ping answers one message with one.
	Ping(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	// PingStream answers one message with a stream of them.
	PingStream(*wrapperspb.StringValue, StreamServer) error
	// PingCollect reads messages until the client closes its side, then answers one.
	PingCollect(CollectServer) error
	// PingChat answers as it reads, both ways at once.
	PingChat(ChatServer) error
	// Stats answers a JSON document: see [Stats].
	Stats(context.Context, *emptypb.Empty) (*wrapperspb.StringValue, error)
}

// Stats is the JSON document of the Stats method.
type Stats struct {
	Instance    string `json:"instance"`
	Revision    string `json:"revision,omitempty"`
	Served      int64  `json:"served"`        // PingService calls finished, Stats not counted
	InFlight    int64  `json:"in_flight"`     // calls running now
	MaxInFlight int64  `json:"max_in_flight"` // most ever running at once
}

// Register registers srv on s (a *grpc.Server) as PingService.
func Register(s grpc.ServiceRegistrar, srv Server) { s.RegisterService(&ServiceDesc, srv) }

// ServiceDesc describes PingService to grpc-go, as protoc-gen-go-grpc would.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*Server)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Ping", Handler: unary(MethodPing, Server.Ping)},
		{MethodName: "Stats", Handler: unary(MethodStats, Server.Stats)},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "PingStream", Handler: pingStreamHandler, ServerStreams: true},
		{StreamName: "PingCollect", Handler: pingCollectHandler, ClientStreams: true},
		{StreamName: "PingChat", Handler: pingChatHandler, ServerStreams: true, ClientStreams: true},
	},
	Metadata: protoFile,
}

// The indexes of ServiceDesc.Streams, for the client's NewStream.
const (
	streamPingStream = iota
	streamPingCollect
	streamPingChat
)

// unary is the handler of a unary method taking a Req: it decodes the request and calls
// the method through the server's interceptor, if it has one.
func unary[Req any](fullMethod string, method func(Server, context.Context, *Req) (*wrapperspb.StringValue, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return method(srv.(Server), ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return method(srv.(Server), ctx, req.(*Req))
		})
	}
}

type stream = grpc.GenericServerStream[wrapperspb.StringValue, wrapperspb.StringValue]

func pingStreamHandler(srv any, ss grpc.ServerStream) error {
	in := new(wrapperspb.StringValue)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	return srv.(Server).PingStream(in, &stream{ServerStream: ss})
}

func pingCollectHandler(srv any, ss grpc.ServerStream) error {
	return srv.(Server).PingCollect(&stream{ServerStream: ss})
}

func pingChatHandler(srv any, ss grpc.ServerStream) error {
	return srv.(Server).PingChat(&stream{ServerStream: ss})
}
