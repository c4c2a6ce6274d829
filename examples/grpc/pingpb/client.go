package pingpb

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Client calls PingService over a connection (a *grpc.ClientConn).
type Client struct{ cc grpc.ClientConnInterface }

// NewClient returns a Client calling over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// Ping sends in and returns the answer.
func (c *Client) Ping(ctx context.Context, in *wrapperspb.StringValue, opts ...grpc.CallOption) (*wrapperspb.StringValue, error) {
	out := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, MethodPing, in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

// PingStream sends in and returns the stream of answers: Recv until io.EOF.
func (c *Client) PingStream(ctx context.Context, in *wrapperspb.StringValue, opts ...grpc.CallOption) (StreamClient, error) {
	cs, err := c.cc.NewStream(ctx, &ServiceDesc.Streams[streamPingStream], MethodPingStream, opts...)
	if err != nil {
		return nil, err
	}
	x := &grpc.GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]{ClientStream: cs}
	if err := x.SendMsg(in); err != nil {
		return nil, err
	}
	if err := x.CloseSend(); err != nil {
		return nil, err
	}
	return x, nil
}

// PingCollect opens the stream: Send messages, then CloseAndRecv the answer.
func (c *Client) PingCollect(ctx context.Context, opts ...grpc.CallOption) (CollectClient, error) {
	cs, err := c.cc.NewStream(ctx, &ServiceDesc.Streams[streamPingCollect], MethodPingCollect, opts...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]{ClientStream: cs}, nil
}

// PingChat opens the stream: Send and Recv in any order, CloseSend when done.
func (c *Client) PingChat(ctx context.Context, opts ...grpc.CallOption) (ChatClient, error) {
	cs, err := c.cc.NewStream(ctx, &ServiceDesc.Streams[streamPingChat], MethodPingChat, opts...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]{ClientStream: cs}, nil
}

// Stats returns the answering instance's counters as JSON (see [Stats]).
func (c *Client) Stats(ctx context.Context, opts ...grpc.CallOption) (*wrapperspb.StringValue, error) {
	out := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, MethodStats, &emptypb.Empty{}, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}
