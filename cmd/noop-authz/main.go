// Command noop-authz is a do-nothing ext_authz gRPC server that allows
// every request. `make bench` measures Deputy against it in the same run:
// its throughput is the ceiling the machine and load tool allow.
package main

import (
	"context"
	"flag"
	"log"
	"net"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9292", "listen address")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, allowAll{})
	reflection.Register(s)
	log.Printf("noop-authz on %s", lis.Addr())
	log.Fatal(s.Serve(lis))
}
