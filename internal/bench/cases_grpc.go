package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
)

// The grpc case: gRPC over TLS 1.3 with default options. A bulk stream is a
// client-streaming call of raw byte messages (one per chunk), with a codec
// for []byte so no protobuf is generated; the ping is a unary call with a
// 64-byte message, echoed.

// rawCodec marshals *[]byte as itself. Marshal copies into a pooled buffer
// (gRPC may write the message after SendMsg returns); Unmarshal copies into
// the destination, reusing its capacity, as a careful user would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.Copy(*p, mem.DefaultBufferPool())}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	n := data.Len()
	if cap(*p) < n {
		*p = make([]byte, n)
	}
	*p = (*p)[:n]
	data.CopyTo(*p)
	return nil
}

func (rawCodec) Name() string { return "raw" }

const (
	grpcUpload = "/bench.Bench/Upload"
	grpcPing   = "/bench.Bench/Ping"
)

func grpcCases() []benchCase {
	return []benchCase{{name: "grpc", muxed: true, connect: newGRPCSession}}
}

type grpcSession struct {
	srv *grpc.Server
	cc  *grpc.ClientConn

	mu       sync.Mutex
	counters map[int]*counter
}

func newGRPCSession(ctx context.Context, e *env) (session, error) {
	l, err := e.listen(ctx)
	if err != nil {
		return nil, err
	}
	s := &grpcSession{counters: map[int]*counter{}}
	s.srv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(e.pki.ServerConfig())),
		grpc.ForceServerCodecV2(rawCodec{}),
	)
	s.srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "bench.Bench",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Ping",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var b []byte
				if err := dec(&b); err != nil {
					return nil, err
				}
				return &b, nil
			},
		}},
		Streams: []grpc.StreamDesc{{
			StreamName:    "Upload",
			ClientStreams: true,
			Handler:       func(_ any, st grpc.ServerStream) error { return s.upload(st) },
		}},
	}, struct{}{})
	go func() { _ = s.srv.Serve(l) }()
	s.cc, err = grpc.NewClient("passthrough:///"+l.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(e.pki.ClientConfig())),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return e.dial(ctx, addr)
		}),
	)
	if err != nil {
		s.srv.Stop()
		return nil, err
	}
	if err := s.ping(ctx); err != nil { // connect now, not during the transfer
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *grpcSession) upload(st grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	var rc *counter
	if ids := md.Get("id"); len(ids) == 1 {
		id, _ := strconv.Atoi(ids[0])
		s.mu.Lock()
		rc = s.counters[id]
		s.mu.Unlock()
	}
	if rc == nil {
		return fmt.Errorf("unknown stream id %v", md.Get("id"))
	}
	var buf []byte
	for {
		err := st.RecvMsg(&buf)
		if err == io.EOF {
			rc.finish(nil)
			empty := []byte{}
			return st.SendMsg(&empty)
		}
		if err != nil {
			rc.finish(err)
			return err
		}
		rc.add(len(buf))
	}
}

func (s *grpcSession) open(id int, rc *counter) (sender, error) {
	s.mu.Lock()
	s.counters[id] = rc
	s.mu.Unlock()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "id", strconv.Itoa(id))
	st, err := s.cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Upload", ClientStreams: true}, grpcUpload)
	if err != nil {
		return nil, err
	}
	return &grpcSender{st: st}, nil
}

func (s *grpcSession) ping(ctx context.Context) error {
	in := make([]byte, 64)
	var out []byte
	if err := s.cc.Invoke(ctx, grpcPing, &in, &out); err != nil {
		return err
	}
	if len(out) != len(in) {
		return fmt.Errorf("echo of %d bytes", len(out))
	}
	return nil
}

func (s *grpcSession) close() {
	s.cc.Close()
	s.srv.Stop()
}

type grpcSender struct{ st grpc.ClientStream }

func (w *grpcSender) send(c chunk) error {
	p := c.payload()
	return w.st.SendMsg(&p)
}

func (w *grpcSender) close() error {
	if err := w.st.CloseSend(); err != nil {
		return err
	}
	var reply []byte
	return w.st.RecvMsg(&reply)
}
